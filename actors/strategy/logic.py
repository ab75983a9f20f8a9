"""ProfitAwareStrategyV1, the old bot's default strategy, as a pure function (no I/O).

Per symbol, from the best bid/ask, the position (quantity, average cost) and the free
quote balance (TRY):
- holding a position and ``bid >= avg_cost * (1 + min_profit_bps/10000)``:
  SELL ``take_profit_fraction`` (25 %) of the position at the bid, reason ``take_profit``
  (at least ``min_exit_notional_try`` worth, at most the position: see _exit_quantity);
- holding a position that is not yet profitable: nothing;
- flat, and spread ``(ask - bid) / bid <= entry_max_spread`` (1 %):
  BUY ``min(free TRY, entry_notional_try) / ask`` at the ask, reason ``conservative_entry``.
No new intent while the symbol has an open order or a pending intent.

Benchmark switch ``StrategyConfig.trade_every_tick`` (off by default, never for real
trading): every book change of a symbol yields a ``conservative_entry`` BUY (spread and
cash permitting), ignoring the position logic, open orders and pending intents, with
the book's identity in the id so each tick is a distinct order. The latency benchmark
uses it to get one order per tick; set risk's cooldown and order rate to match.

The ``intent_id`` is deterministic (shared.ids.intent_id) and anchored on state that
survives a restart: the position as the executor reports it (quantity, average cost,
realised PnL, fees: every fill changes at least one of them) plus a per-symbol retry
epoch that moves on only after an order of ours ended without a fill. The same
decision on the same state yields the same id, so a restarted strategy re-sends the
same id and the executor (and risk) recognise it instead of placing a second order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bus.messages import Intent, Position
from shared.config import StrategyConfig
from shared.ids import decimal_key, intent_id

STRATEGY = "profit_aware_v1"
BPS = Decimal(10_000)


@dataclass(frozen=True)
class SymbolView:
    """Everything the decision for one symbol may look at."""

    symbol: str
    bid: Decimal
    ask: Decimal
    position: Position | None
    free_quote: Decimal
    open_orders: int
    pending_intent: bool
    epoch: int = 0
    book_key: str = ""  # identity of the book (trade_every_tick ids)
    book_mono_ns: int = 0


def position_anchor(pos: Position | None, epoch: int) -> str:
    if pos is None:
        return f"q=0|c=0|r=0|f=0|e={epoch}"
    return (f"q={decimal_key(pos.quantity)}|c={decimal_key(pos.avg_cost)}|"
            f"r={decimal_key(pos.realized_pnl)}|f={decimal_key(pos.fees)}|e={epoch}")


def decide(view: SymbolView, params: StrategyConfig, now_wall_ns: int) -> Intent | None:
    """The intent for this symbol now, or None."""
    if view.bid <= 0 or view.ask <= 0 or view.ask < view.bid:
        return None
    if params.trade_every_tick:
        return _entry(view, params, now_wall_ns, tick=True)
    if view.open_orders > 0 or view.pending_intent:
        return None
    qty = view.position.quantity if view.position is not None else Decimal(0)
    if qty > 0:
        return _take_profit(view, params, now_wall_ns)
    return _entry(view, params, now_wall_ns, tick=False)


def _take_profit(view: SymbolView, params: StrategyConfig, now_wall_ns: int) -> Intent | None:
    pos = view.position
    assert pos is not None
    target = pos.avg_cost * (1 + Decimal(params.min_profit_bps) / BPS)
    if view.bid < target:
        return None  # holding, not yet profitable
    return _intent(view, params, "sell", view.bid, _exit_quantity(pos.quantity, view.bid, params),
                   "take_profit", now_wall_ns, position_anchor(pos, view.epoch))


def _exit_quantity(held: Decimal, bid: Decimal, params: StrategyConfig) -> Decimal:
    """The take-profit fraction of the position, but never a sell the exchange would
    refuse as too small: below ``min_exit_notional_try`` it sells that much (at most
    everything held). With the old bot's defaults, 25 % of a 100 TRY entry is 25 TRY,
    under BTCTurk's ~100 TRY minimum, so its positions could never be sold."""
    quantity = held * params.take_profit_fraction
    if quantity * bid < params.min_exit_notional_try:
        quantity = min(held, params.min_exit_notional_try / bid)
    return quantity


def _entry(view: SymbolView, params: StrategyConfig, now_wall_ns: int, *,
           tick: bool) -> Intent | None:
    spread = (view.ask - view.bid) / view.bid
    if spread > params.entry_max_spread:
        return None
    notional = min(view.free_quote, params.entry_notional_try)
    if notional <= 0:
        return None
    anchor = position_anchor(view.position, view.epoch)
    if tick:
        anchor += f"|tick={view.book_key}"
    return _intent(view, params, "buy", view.ask, notional / view.ask, "conservative_entry",
                   now_wall_ns, anchor)


def _intent(view: SymbolView, params: StrategyConfig, side: str, price: Decimal,
            quantity: Decimal, reason: str, now_wall_ns: int, anchor: str) -> Intent | None:
    if quantity <= 0:
        return None
    return Intent(
        intent_id=intent_id(STRATEGY, view.symbol, side, reason, anchor),
        symbol=view.symbol, side=side, order_type="limit",  # type: ignore[arg-type]
        price=price, quantity=quantity, reason=reason, ttl_s=params.ttl_s,
        strategy=STRATEGY, created_wall_ns=now_wall_ns, book_mono_ns=view.book_mono_ns,
    )
