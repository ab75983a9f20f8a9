"""The strategy host's pure core: it keeps what a plug-in may look at, calls the plug-in
safely and turns its actions into intents and cancels. No I/O: the strategy actor feeds
it bus messages and sends what it returns; the backtest drives the same object.

Intent ids (shared.ids.intent_id) are derived from the strategy's name, the symbol, side,
reason, the plug-in's ``key``, the position as the executor reports it (every fill
changes it), a per-symbol epoch (moves on after an order of ours ended unfilled) and the
host's ``boot`` number (persisted by the actor and bumped on every start): the same
decision on the same state in one run gets the same id (a re-send is recognised by risk
and the executor), and a restart never reuses an id of an earlier run. The boot number
travels on every Intent, so a replay can run with the recorded one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from actors.strategy import gating
from actors.strategy.api import Action, Cancel, OpenOrderView, Place, Strategy, SymbolContext
from bus.messages import (
    TERMINAL_ORDER_STATES,
    BookSnapshot,
    CancelOrder,
    Fill,
    Intent,
    OpenOrder,
    OrderEvent,
    PortfolioSnapshot,
    Position,
    SymbolRules,
)
from shared.ids import decimal_key, intent_id

Hook = Callable[[SymbolContext], Sequence[Action]]


def position_anchor(pos: Position | None, epoch: int) -> str:
    if pos is None:
        return f"q=0|c=0|r=0|f=0|e={epoch}"
    return (f"q={decimal_key(pos.quantity)}|c={decimal_key(pos.avg_cost)}|"
            f"r={decimal_key(pos.realized_pnl)}|f={decimal_key(pos.fees)}|e={epoch}")


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plug-in raised: what to log (the hook, the input) and what happened (paused)."""

    symbol: str
    hook: str
    error: str
    context: SymbolContext


@dataclass
class Outcome:
    intents: list[Intent] = field(default_factory=list)
    cancels: list[CancelOrder] = field(default_factory=list)
    failure: PluginFailure | None = None


@dataclass
class StrategyHost:
    strategy: Strategy
    boot: int = 0
    gate: gating.GatingState = field(default_factory=gating.GatingState)
    books: dict[str, BookSnapshot] = field(default_factory=dict)
    clock_of: dict[str, int] = field(default_factory=dict)  # sym -> message clock of its book
    rules: dict[str, SymbolRules] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[str, OpenOrderView] = field(default_factory=dict)  # cid -> details
    failed: dict[str, str] = field(default_factory=dict)  # sym -> why the plug-in is paused

    @property
    def hears_trades(self) -> bool:
        """The plug-in overrides ``on_trade``: only then is a public trade worth a
        decision (building a context per trade for a no-op hook is wasted work)."""
        return type(self.strategy).on_trade is not Strategy.on_trade

    # --- facts in ------------------------------------------------------------------------
    def apply_book(self, book: BookSnapshot, clock_ns: int) -> None:
        self.books[book.symbol] = book
        self.clock_of[book.symbol] = clock_ns

    def apply_rules(self, rules: SymbolRules) -> None:
        self.rules[rules.symbol] = rules

    def apply_snapshot(self, snap: PortfolioSnapshot, since_mono: int) -> bool:
        """True on the first sync."""
        self.positions = {p.symbol: p for p in snap.positions}
        self.balances = {b.asset: b.free for b in snap.balances}
        first = gating.apply_snapshot(self.gate, snap.open_orders, since_mono)
        fresh = {o.client_order_id: _view(o) for o in snap.open_orders
                 if o.state not in TERMINAL_ORDER_STATES}
        old = self.orders
        self.orders = {}
        for orders in self.gate.open_orders.values():
            for cid in orders:
                view = fresh.get(cid) or old.get(cid)
                if view is not None:
                    self.orders[cid] = view
        return first

    def apply_order_event(self, ev: OrderEvent, now_mono: int) -> bool:
        """True when the order ended (refresh the position)."""
        ended = gating.apply_order_event(self.gate, ev, now_mono)
        if ended:
            self.orders.pop(ev.client_order_id, None)
        else:
            self.orders[ev.client_order_id] = OpenOrderView(
                ev.client_order_id, ev.side, ev.price, ev.quantity, ev.filled_quantity)
        return ended

    def approved(self, intent: Intent, cid: str, now_mono: int) -> None:
        gating.approved(self.gate, intent.symbol, cid, now_mono)
        self.orders.setdefault(cid, OpenOrderView(cid, intent.side, intent.price,
                                                  intent.quantity, Decimal(0)))

    # --- deciding ------------------------------------------------------------------------
    def context(self, symbol: str) -> SymbolContext | None:
        book = self.books.get(symbol)
        if book is None or not book.bids or not book.asks:
            return None
        rules = self.rules.get(symbol)
        quote = rules.quote if rules is not None else ""
        base = rules.base if rules is not None else ""
        open_views = tuple(self.orders.get(cid) or OpenOrderView(cid, "", Decimal(0),
                                                                 Decimal(0), Decimal(0))
                           for cid in self.gate.open_ids(symbol))
        return SymbolContext(
            symbol=symbol, now_ns=self.clock_of.get(symbol, 0), book=book,
            position=self.positions.get(symbol),
            free_quote=self.balances.get(quote, Decimal(0)),
            free_base=self.balances.get(base, Decimal(0)),
            open_orders=open_views, pending=symbol in self.gate.pending, rules=rules)

    def decide(self, symbol: str, hook: str = "on_book", *args: object) -> Outcome:
        """Call the plug-in's ``hook`` for ``symbol`` (the caller checked the gates) and
        turn its actions into intents (marked pending) and cancels."""
        out = Outcome()
        if symbol in self.failed:
            return out
        ctx = self.context(symbol)
        if ctx is None:
            return out
        try:
            actions = list(getattr(self.strategy, hook)(ctx, *args))
            for a in actions:
                if not isinstance(a, Place | Cancel):
                    raise TypeError(f"{hook} returned {a!r}, not a Place or Cancel")
        except Exception as exc:  # noqa: BLE001 - a plug-in's bug must not kill the host
            why = f"{type(exc).__name__}: {exc}"
            self.failed[symbol] = f"{hook}: {why}"
            out.failure = PluginFailure(symbol, hook, why, ctx)
            return out
        for a in actions:
            if isinstance(a, Cancel):
                if a.client_order_id in self.gate.open_orders.get(symbol, {}):
                    out.cancels.append(CancelOrder(client_order_id=a.client_order_id,
                                                   reason=a.reason))
                continue
            intent = self._intent(ctx, a)
            if intent is not None:
                gating.begin_intent(self.gate, symbol, intent.intent_id)
                out.intents.append(intent)
        return out

    def _intent(self, ctx: SymbolContext, a: Place) -> Intent | None:
        if a.quantity <= 0 or a.price <= 0:
            return None
        anchor = position_anchor(ctx.position, self.gate.epoch.get(ctx.symbol, 0))
        anchor += f"|b={self.boot}" + (f"|k={a.key}" if a.key else "")
        return Intent(
            intent_id=intent_id(self.strategy.name, ctx.symbol, a.side, a.reason, anchor),
            symbol=ctx.symbol, side=a.side, order_type="limit", price=a.price,
            quantity=a.quantity, reason=a.reason, ttl_s=a.ttl_s, strategy=self.strategy.name,
            created_wall_ns=ctx.now_ns, book_mono_ns=ctx.book.recv_mono_ns, boot=self.boot)

    def on_fill(self, fill: Fill, now_mono: int) -> Outcome:
        gating.mark_dirty(self.gate, fill.symbol, now_mono)
        return self.decide(fill.symbol, "on_fill", fill)


def _view(o: OpenOrder) -> OpenOrderView:
    return OpenOrderView(o.client_order_id, o.side, o.price, o.quantity, o.filled_quantity)
