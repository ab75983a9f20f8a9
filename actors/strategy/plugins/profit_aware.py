"""ProfitAwareStrategyV1, the old bot's default strategy, as a plug-in.

Per symbol, from the best bid/ask, the position (quantity, average cost) and the free
quote balance (TRY):
- holding a position and ``bid >= avg_cost * (1 + min_profit_bps/10000)``:
  SELL ``take_profit_fraction`` (25 %) of the position at the bid, reason ``take_profit``
  (at least ``min_exit_notional_try`` worth, at most the position: see _exit_quantity);
- holding a position that is not yet profitable: nothing;
- flat, and spread ``(ask - bid) / bid <= entry_max_spread`` (1 %):
  BUY ``min(free TRY, entry_notional_try) / ask`` at the ask, reason ``conservative_entry``.
No new intent while the symbol has an open order or a pending intent.

Benchmark switch ``trade_every_tick`` (off by default, never for real trading): every
book change of a symbol yields a ``conservative_entry`` BUY (spread and cash permitting),
ignoring the position logic, open orders and pending intents, with the book's identity in
the intent's key so each tick is a distinct order; the host then skips its throttle and
reject backoff (``unthrottled``). The latency benchmark uses it to get one order per
tick; set risk's cooldown and order rate to match.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from actors.strategy.api import Action, Params, Place, Strategy, SymbolContext

BPS = Decimal(10_000)


class ProfitAwareParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    min_profit_bps: int = 30
    entry_max_spread: Decimal = Decimal("0.01")
    entry_notional_try: Decimal = Decimal("100")
    take_profit_fraction: Decimal = Decimal("0.25")
    # A take-profit sells at least this much TRY worth (capped at the position): the
    # exchange refuses orders under its minimum total (minExchangeValue, ~100 TRY).
    min_exit_notional_try: Decimal = Decimal("110")
    ttl_s: float = 120.0
    trade_every_tick: bool = False  # benchmarks only, see the module docstring

    def __post_init__(self) -> None:
        for name in ("entry_max_spread", "entry_notional_try", "take_profit_fraction",
                     "min_exit_notional_try"):
            value = getattr(self, name)
            if not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0 (got {value})")
        if not 0 < self.take_profit_fraction <= 1:
            raise ValueError("take_profit_fraction must be in (0, 1]")


class ProfitAware(Strategy):
    name = "profit_aware_v1"
    Params = ProfitAwareParams

    def __init__(self, params: ProfitAwareParams) -> None:
        super().__init__(params)
        self.p = params

    def order_sizes(self) -> dict[str, Decimal]:
        return {"entry_notional_try": self.p.entry_notional_try,
                "min_exit_notional_try": self.p.min_exit_notional_try}

    @property
    def unthrottled(self) -> bool:
        return self.p.trade_every_tick

    def on_book(self, ctx: SymbolContext) -> Sequence[Action]:
        if ctx.bid <= 0 or ctx.ask <= 0 or ctx.ask < ctx.bid:
            return ()
        if self.p.trade_every_tick:
            b = ctx.book
            return self._entry(ctx, key=f"tick={b.source}:{b.change_set}:{b.exchange_ts_ms}:"
                                        f"{b.recv_wall_ns}")
        if ctx.open_orders or ctx.pending:
            return ()
        if ctx.quantity > 0:
            return self._take_profit(ctx)
        return self._entry(ctx, key="")

    def _take_profit(self, ctx: SymbolContext) -> Sequence[Action]:
        pos = ctx.position
        assert pos is not None
        target = pos.avg_cost * (1 + Decimal(self.p.min_profit_bps) / BPS)
        if ctx.bid < target:
            return ()  # holding, not yet profitable
        qty = self._exit_quantity(pos.quantity, ctx.bid)
        return self._place("sell", ctx.bid, qty, "take_profit", "")

    def _exit_quantity(self, held: Decimal, bid: Decimal) -> Decimal:
        """The take-profit fraction of the position, but never a sell the exchange would
        refuse as too small: below ``min_exit_notional_try`` it sells that much (at most
        everything held). With the old bot's defaults, 25 % of a 100 TRY entry is 25 TRY,
        under BTCTurk's ~100 TRY minimum, so its positions could never be sold."""
        quantity = held * self.p.take_profit_fraction
        if quantity * bid < self.p.min_exit_notional_try:
            quantity = min(held, self.p.min_exit_notional_try / bid)
        return quantity

    def _entry(self, ctx: SymbolContext, key: str) -> Sequence[Action]:
        spread = (ctx.ask - ctx.bid) / ctx.bid
        if spread > self.p.entry_max_spread:
            return ()
        notional = min(ctx.free_quote, self.p.entry_notional_try)
        if notional <= 0:
            return ()
        return self._place("buy", ctx.ask, notional / ctx.ask, "conservative_entry", key)

    def _place(self, side: str, price: Decimal, qty: Decimal, reason: str,
               key: str) -> Sequence[Action]:
        if qty <= 0:
            return ()
        return (Place(side=side, price=price, quantity=qty, reason=reason,  # type: ignore[arg-type]
                      ttl_s=self.p.ttl_s, key=key),)
