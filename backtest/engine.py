"""The backtest engine: recorded market data through the strategy host and risk's pure
decision, with the fill model of fills.py standing in for the executor and the exchange.
One process, no sockets, no wall clock: time is the recorded messages' envelope time.

Per message (in recorded order):
- ``md.rules.*`` and ``md.status`` update the host and risk as live;
- ``md.book.*``: orders past their ttl leave; risk and the host take the book; resting
  orders the book crosses fill; then the strategy is evaluated for the symbol under the
  live host's rules (gating.py: throttle on the message clock, reject backoff, one
  intent in flight; a throttled book is evaluated at the first message at or after the
  end of the throttle window, where live runs a timer);
- an intent goes to ``actors.risk.decision.decide`` with the same state functions risk
  uses (so the same tick/lot rounding, min-notional and limits); an approved order is
  submitted to the matcher at once (the executor and the exchange are instantaneous
  here) and the portfolio the host and risk see is refreshed after every change (no
  snapshot latency either);
- ``md.trade.*`` (public trades): the strategy's ``on_trade`` behind the same gates, not
  throttled, as live (only plug-ins that override it are called). Fills come from books
  only: a recorded trade at our price without a book crossing us does not fill us.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal

from actors.risk import state as risk_state
from actors.risk.decision import decide as risk_decide
from actors.strategy import gating
from actors.strategy.api import Strategy
from actors.strategy.host import Outcome, StrategyHost
from backtest.fills import FEE_QUANTUM, Matcher, SimFill, SimOrder
from bus.messages import (
    Balance,
    BookSnapshot,
    FeedStatus,
    Fill,
    Intent,
    KeyCounts,
    Latches,
    OpenOrder,
    OrderEvent,
    PortfolioSnapshot,
    Position,
    PublicTrade,
    SymbolRules,
)
from shared import pnl
from shared.config import BacktestConfig, Config
from shared.ids import client_order_id

ZERO = Decimal(0)


_DEFAULTS = BacktestConfig()


@dataclass(frozen=True)
class Fees:
    """Fee rates (fractions). Defaults: ``[backtest]``'s, which are the simulator's."""

    maker: Decimal = _DEFAULTS.maker_fee_bps / 10000
    taker: Decimal = _DEFAULTS.taker_fee_bps / 10000

    @classmethod
    def of(cls, cfg: Config) -> Fees:
        return cls(cfg.backtest.maker_fee_bps / 10000, cfg.backtest.taker_fee_bps / 10000)


@dataclass
class Sample:
    ts_ns: int
    equity: Decimal
    net: Decimal
    inventory: dict[str, Decimal]
    mids: dict[str, Decimal]


@dataclass
class Result:
    start_ns: int = 0
    end_ns: int = 0
    books: int = 0
    start_equity: Decimal = ZERO
    fills: list[SimFill] = field(default_factory=list)
    orders: list[SimOrder] = field(default_factory=list)
    intents: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    pnl_rows: dict[str, pnl.Pnl] = field(default_factory=dict)
    plugin_errors: list[str] = field(default_factory=list)
    balances: dict[str, Decimal] = field(default_factory=dict)


class Backtest:
    def __init__(self, cfg: Config, strategy: Strategy, *, fees: Fees = Fees(),
                 balances: dict[str, Decimal] | None = None, sample_s: float = 1.0) -> None:
        self.cfg = cfg
        self.host = StrategyHost(strategy, boot=0)
        self.unthrottled = strategy.unthrottled
        self.risk = risk_state.RiskState()
        self.matcher = Matcher(fees.maker, fees.taker)
        self.free: dict[str, Decimal] = dict(balances or {"TRY": Decimal("100000")})
        self._initial = dict(self.free)
        self.locked: dict[str, Decimal] = {}
        self.positions: dict[str, pnl.PositionState] = {}
        self.result = Result()
        self.quote = cfg.risk.cash_asset
        self.sample_ns = int(sample_s * 1e9)
        self._next_sample = 0
        self._mono = 0
        self._trailing: dict[str, int] = {}  # symbol -> clock the throttle window ends
        self._throttle_ns = cfg.strategy.throttle_ms * 1_000_000
        self._backoff_ns = int(cfg.strategy.reject_backoff_s * 1e9)
        self._clock = 0
        self._locks: dict[str, tuple[str, Decimal]] = {}  # cid -> (asset, still locked)

    # --- driving ------------------------------------------------------------------------
    def run(self, messages: Iterable[tuple[int, object]]) -> Result:
        """``messages``: (envelope wall_ns, body) in recorded order."""
        for clock, body in messages:
            self.step(clock, body)
        self.finish()
        return self.result

    def _apply_market(self, body: object, clock: int) -> bool:
        """Books, trades, rules and feed status into the strategy host and risk; False
        for any other message (left to the caller)."""
        match body:
            case BookSnapshot():
                self._on_book(body, clock)
            case PublicTrade():
                if self.host.hears_trades and body.symbol in self.host.books:
                    self._evaluate(body.symbol, clock, "on_trade", body.price,
                                   body.quantity, body.side)
            case SymbolRules():
                self.host.apply_rules(body)
                risk_state.apply_rules(self.risk, body)
            case FeedStatus():
                risk_state.apply_feed_status(self.risk, body)
            case _:
                return False
        return True

    def step(self, clock: int, body: object) -> None:
        self._clock = clock
        if not self.result.start_ns:
            self.result.start_ns = clock
        self.result.end_ns = clock
        self._apply_market(body, clock)
        for symbol, due in list(self._trailing.items()):
            if clock >= due:
                del self._trailing[symbol]
                self._evaluate(symbol, clock)

    def finish(self) -> None:
        self._sample(self.result.end_ns, force=True)
        self.result.pnl_rows = self._pnl_rows()
        self.result.balances = {a: self.free.get(a, ZERO) + self.locked.get(a, ZERO)
                                for a in sorted(set(self.free) | set(self.locked))}

    # --- market data --------------------------------------------------------------------
    def _on_book(self, book: BookSnapshot, clock: int) -> None:
        if not book.bids or not book.asks:
            return
        self.result.books += 1
        for order in self.matcher.expire(clock):
            self._ended(order, "CANCELED")
        risk_state.apply_book(self.risk, book)
        self.host.apply_book(book, clock)
        fills = self.matcher.on_book(book, clock)
        if fills:
            self._apply_fills(fills)
        if not self.result.start_equity and self._all_marked():
            # The starting balances at the first prices of every symbol (orders placed
            # before every symbol had a book are the strategy's result, not its start).
            self.result.start_equity = self.equity(self._initial)
        self._sample(clock)
        self._trigger(book.symbol, clock)

    def _trigger(self, symbol: str, clock: int) -> None:
        if self.unthrottled:
            self._evaluate(symbol, clock)
            return
        # The throttle runs on the symbol's latest book's clock, as the live actor's
        # (``_on_trigger``): a trigger by a later message (a portfolio snapshot) does not
        # move it on, or a snapshot that came over an interval after the book would
        # evaluate that book again where live waits for the next.
        clock = self.host.clock_of.get(symbol, clock)
        wait = gating.throttle_wait_ns(self.host.gate, symbol, clock, self._throttle_ns)
        if wait == 0:
            self._trailing.pop(symbol, None)
            self._evaluate(symbol, clock)
        else:
            self._trailing.setdefault(symbol, clock + wait)

    # --- deciding -----------------------------------------------------------------------
    def _evaluate(self, symbol: str, clock: int, hook: str = "on_book", *args: object) -> None:
        if hook == "on_book":
            gating.mark_evaluated(self.host.gate, symbol,
                                  self.host.clock_of.get(symbol, clock))
        if not self.host.gate.synced:
            self._refresh()
        if symbol not in self.host.rules or symbol not in self.host.books:
            return
        now = self.host.clock_of.get(symbol, clock)
        if gating.blocked(self.host.gate, symbol, now, every_tick=self.unthrottled):
            return
        self._act(self.host.decide(symbol, hook, *args))

    def _act(self, out: Outcome) -> None:
        if out.failure is not None:
            f = out.failure
            self.result.plugin_errors.append(f"{f.symbol} {f.hook}: {f.error}")
        for cancel in out.cancels:
            order = self.matcher.cancel(cancel.client_order_id)
            if order is not None:
                self._ended(order, "CANCELED")
        for intent in out.intents:
            self._submit(intent)

    def _submit(self, intent: Intent) -> None:
        self.result.intents += 1
        symbol = intent.symbol
        # The instant executor's state is always current (no snapshot age here).
        self.risk.snapshot_wall_ns = max(self.risk.snapshot_wall_ns, intent.created_wall_ns)
        verdict = risk_decide(intent, self.risk, self.cfg, intent.created_wall_ns)
        gating.end_intent(self.host.gate, symbol, intent.intent_id)
        if not verdict.approved:
            for reason in verdict.reasons:
                self.result.rejections[reason] += 1
            gating.rejected(self.host.gate, symbol, intent.created_wall_ns, self._backoff_ns)
            return
        cid = client_order_id(self.cfg.executor.client_id_prefix, intent.intent_id)
        risk_state.record_approval(self.risk, symbol, cid, intent.side, verdict.price,
                                   verdict.quantity, intent.created_wall_ns)
        order = SimOrder(cid, intent.intent_id, symbol, intent.side, verdict.price,
                         verdict.quantity, intent.created_wall_ns,
                         intent.created_wall_ns + int(intent.ttl_s * 1e9))
        self._lock(order)
        self.result.orders.append(order)
        self.host.approved(intent, cid, self._tick())
        fills = self.matcher.submit(order, self.host.books.get(symbol), intent.created_wall_ns)
        if fills:
            self._apply_fills(fills)
        else:
            self._refresh()

    # --- the account --------------------------------------------------------------------
    def _assets(self, symbol: str) -> tuple[str, str]:
        r = self.host.rules[symbol]
        return r.base, r.quote

    def _lock(self, order: SimOrder) -> None:
        base, quote = self._assets(order.symbol)
        if order.side == "buy":
            # as the simulator: reserve at the taker rate, so no fill costs more
            amount = (order.price * order.quantity * (1 + self.matcher.taker_fee)).quantize(
                FEE_QUANTUM, rounding=ROUND_UP)
            asset = quote
        else:
            amount, asset = order.quantity, base
        self.free[asset] = self.free.get(asset, ZERO) - amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount
        self._locks[order.cid] = (asset, amount)

    def _apply_fills(self, fills: list[SimFill]) -> None:
        seen, ended = self._book_fills(fills)
        self._tell_fills(seen, ended)

    def _book_fills(self, fills: list[SimFill]) -> tuple[list[Fill], list[SimOrder]]:
        """The account's side of fills: balances, locks, positions; returns the fill
        messages and the orders they completed (``_tell_fills`` announces them)."""
        ended: list[SimOrder] = []
        seen: list[Fill] = []
        by_cid = {o.cid: o for o in self.result.orders[-200:]} | {
            o.cid: o for o in self.matcher.open.values()}
        for f in fills:
            base, quote = self._assets(f.symbol)
            notional = f.price * f.quantity
            asset, locked = self._locks[f.cid]
            spent = notional + f.fee if f.side == "buy" else f.quantity
            self._locks[f.cid] = (asset, locked - spent)
            self.locked[asset] -= spent
            if f.side == "buy":
                self.free[base] = self.free.get(base, ZERO) + f.quantity
            else:
                self.free[quote] = self.free.get(quote, ZERO) + notional - f.fee
            self.positions[f.symbol] = pnl.apply_fill(
                self.positions.get(f.symbol, pnl.PositionState()), f.side, f.price,
                f.quantity, f.fee)
            self.result.fills.append(f)
            order = by_cid.get(f.cid)
            fill_msg = Fill(trade_id=str(len(self.result.fills)), exchange_order_id=0,
                            client_order_id=f.cid, symbol=f.symbol,
                            side=f.side,  # type: ignore[arg-type]
                            price=f.price, quantity=f.quantity, fee=f.fee, fee_asset=quote,
                            ts_ms=f.ts_ns // 1_000_000)
            seen.append(fill_msg)
            if order is not None and order.left <= 0 and order not in ended:
                ended.append(order)
        for order in ended:
            self._release(order)
        return seen, ended

    def _tell_fills(self, seen: list[Fill], ended: list[SimOrder]) -> None:
        """The pipeline's side: risk and the host hear of the fills and ended orders."""
        for order in ended:
            self._announce(order, "FILLED")
        # The plug-in hears of its fills (as live, before the position reflects them
        # in its next snapshot), then the instant snapshot follows.
        outcomes = [self.host.on_fill(msg, self._tick()) for msg in seen]
        self._refresh()
        for out in outcomes:
            self._act(out)

    def _ended(self, order: SimOrder, state: str, *, refresh: bool = True) -> None:
        self._release(order)
        self._announce(order, state)
        if refresh:
            self._refresh()

    def _release(self, order: SimOrder) -> None:
        """What the order still held goes back to the free balance."""
        asset, left = self._locks.pop(order.cid, ("", ZERO))
        if asset and left:
            self.locked[asset] -= left
            self.free[asset] = self.free.get(asset, ZERO) + left

    def _announce(self, order: SimOrder, state: str) -> None:
        """The executor's terminal order event, to the host and risk."""
        self.host.apply_order_event(OrderEvent(
            client_order_id=order.cid, intent_id=order.intent_id, symbol=order.symbol,
            side=order.side, state=state, price=order.price,  # type: ignore[arg-type]
            quantity=order.quantity, filled_quantity=order.filled), self._tick())
        risk_state.apply_order_event(self.risk, OrderEvent(
            client_order_id=order.cid, intent_id=order.intent_id, symbol=order.symbol,
            side=order.side, state=state, price=order.price,  # type: ignore[arg-type]
            quantity=order.quantity, filled_quantity=order.filled))

    def _refresh(self) -> None:
        """The executor's snapshot, instantly: positions, balances, open orders."""
        snap = self._portfolio()
        self.host.apply_snapshot(snap, self._tick())
        risk_state.apply_snapshot(self.risk, snap, self._clock, self.quote)

    def _portfolio(self) -> PortfolioSnapshot:
        return PortfolioSnapshot(
            positions=[Position(symbol=s, quantity=p.quantity, avg_cost=p.avg_cost,
                                realized_pnl=p.realized_pnl, fees=p.fees)
                       for s, p in sorted(self.positions.items())],
            balances=[Balance(asset=a, free=self.free.get(a, ZERO),
                              locked=self.locked.get(a, ZERO))
                      for a in sorted(set(self.free) | set(self.locked))],
            open_orders=[OpenOrder(client_order_id=o.cid, intent_id=o.intent_id,
                                   symbol=o.symbol, side=o.side,  # type: ignore[arg-type]
                                   price=o.price, quantity=o.quantity,
                                   filled_quantity=o.filled, state=state)
                         for o, state in self._open_orders()],
            latches=Latches(), keys=KeyCounts())

    def _open_orders(self) -> Iterable[tuple[SimOrder, str]]:
        """What the executor's snapshot lists as open (the matcher's resting orders)."""
        return ((o, "OPEN") for o in self.matcher.open.values())

    def _tick(self) -> int:
        self._mono += 1
        return self._mono

    # --- figures ------------------------------------------------------------------------
    def _mid(self, symbol: str) -> Decimal | None:
        book = self.host.books.get(symbol)
        if book is None or not book.bids or not book.asks:
            return None
        return pnl.mark_price(book.bids[0][0], book.asks[0][0])

    def _all_marked(self) -> bool:
        return bool(self.host.rules) and all(self._mid(s) is not None for s in self.host.rules)

    def equity(self, balances: dict[str, Decimal] | None = None) -> Decimal:
        """Quote balance plus every base asset at its symbol's mid (free and locked; or
        of ``balances``)."""
        total = ZERO
        base_symbol = {r.base: s for s, r in self.host.rules.items()}
        if balances is None:
            balances = {a: self.free.get(a, ZERO) + self.locked.get(a, ZERO)
                        for a in set(self.free) | set(self.locked)}
        for asset, amount in balances.items():
            if asset == self.quote:
                total += amount
            elif asset in base_symbol:
                mid = self._mid(base_symbol[asset])
                total += amount * mid if mid is not None else ZERO
        return total

    def _pnl_rows(self) -> dict[str, pnl.Pnl]:
        return {s: pnl.position_pnl(p.quantity, p.avg_cost, p.realized_pnl, p.fees,
                                    self._mid(s))
                for s, p in sorted(self.positions.items())}

    def _sample(self, clock: int, force: bool = False) -> None:
        if not self.result.start_equity or (clock < self._next_sample and not force):
            return
        self._next_sample = clock + self.sample_ns
        mids = {s: m for s in self.host.rules if (m := self._mid(s)) is not None}
        net = pnl.total(self._pnl_rows().values()).net
        self.result.samples.append(Sample(
            clock, self.equity(), net,
            {s: p.quantity for s, p in self.positions.items()}, mids))

