"""Risk's view of the world, derived only from bus messages and executor snapshots.

Pure: every update is a function of (state, message, clock value passed in). Replaying
the same messages in the same order rebuilds the same state, which is what makes the
risk decisions reproducible (``replay --verify``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from bus.messages import (
    TERMINAL_ORDER_STATES,
    BookSnapshot,
    Control,
    FeedStatus,
    Latches,
    OrderEvent,
    PortfolioSnapshot,
    Position,
    SymbolRules,
)
from shared import pnl
from shared.tradingday import TradingDay

MINUTE_NS = 60 * 1_000_000_000


@dataclass
class BookView:
    recv_wall_ns: int
    age_ms: int
    best_bid: Decimal
    best_ask: Decimal


@dataclass
class OpenView:
    side: str
    remaining: Decimal
    price: Decimal


@dataclass
class RiskState:
    feed: dict[str, bool] = field(default_factory=dict)  # symbol -> fresh (FeedStatus)
    books: dict[str, BookView] = field(default_factory=dict)
    rules: dict[str, SymbolRules] = field(default_factory=dict)
    latches: Latches | None = None  # None: executor state never learnt
    snapshot_wall_ns: int = 0
    control_kill: bool = False  # set at once by a control message
    control_paused: bool = False
    positions: dict[str, Position] = field(default_factory=dict)
    free_quote: Decimal | None = None  # None: unknown -> buys are rejected
    open_orders: dict[str, dict[str, OpenView]] = field(default_factory=dict)
    last_order_ns: dict[str, int] = field(default_factory=dict)
    recent_orders_ns: deque[int] = field(default_factory=deque)
    trading_day: TradingDay = field(default_factory=TradingDay)  # when the day starts
    day: int = -1  # the trading day of the latest snapshot
    day_start_net: Decimal = Decimal(0)  # net PnL at the first snapshot of that day
    day_start_marked: bool = False  # every held position had a book for the baseline

    def open_count(self, symbol: str) -> int:
        return len(self.open_orders.get(symbol, {}))

    def net_pnl(self) -> Decimal:
        """Net PnL of the positions (shared/pnl.py), marked at the mid of the latest
        books; a symbol without a book contributes its realised PnL and fees only."""
        rows = []
        for p in self.positions.values():
            book = self.books.get(p.symbol)
            mark = pnl.mark_price(book.best_bid, book.best_ask) if book is not None else None
            rows.append(pnl.position_pnl(p.quantity, p.avg_cost, p.realized_pnl, p.fees, mark))
        return pnl.total(rows).net

    def all_marked(self) -> bool:
        return all(p.quantity == 0 or p.symbol in self.books for p in self.positions.values())

    def daily_loss(self) -> Decimal:
        """How far net PnL fell since the first snapshot of the current trading day
        (>0 = loss). Open positions count at today's mark, so a loss need not be
        realised to stop new orders."""
        return self.day_start_net - self.net_pnl()


def apply_feed_status(state: RiskState, st: FeedStatus) -> None:
    state.feed[st.symbol] = st.fresh


def apply_book(state: RiskState, book: BookSnapshot) -> None:
    if not book.bids or not book.asks:
        return
    state.books[book.symbol] = BookView(book.recv_wall_ns, book.age_ms, book.bids[0][0],
                                        book.asks[0][0])


def apply_rules(state: RiskState, rules: SymbolRules) -> None:
    state.rules[rules.symbol] = rules


def apply_control(state: RiskState, control: Control) -> None:
    match control.command:
        case "kill_switch_on":
            state.control_kill = True
        case "kill_switch_off":
            # Clears only the operator flag; a persisted executor latch stays until a
            # snapshot says it is off.
            state.control_kill = False
            if state.latches is not None:
                state.latches = Latches(kill_switch=False, safety_latch=state.latches.safety_latch,
                                        paused=state.latches.paused, reason=state.latches.reason)
        case "pause":
            state.control_paused = True
        case "resume":
            state.control_paused = False
            if state.latches is not None and state.latches.paused:
                state.latches = Latches(kill_switch=state.latches.kill_switch,
                                        safety_latch=state.latches.safety_latch, paused=False,
                                        reason=state.latches.reason)
        case _:
            pass


def apply_snapshot(
    state: RiskState, snap: PortfolioSnapshot, now_ns: int, quote_asset: str,
    keep_cids: frozenset[str] = frozenset(),
) -> None:
    """The executor's view replaces ours. ``keep_cids``: orders we approved after the
    snapshot was requested, which it cannot contain yet."""
    state.latches = snap.latches
    state.snapshot_wall_ns = now_ns
    state.positions = {p.symbol: p for p in snap.positions}
    state.free_quote = next((b.free for b in snap.balances if b.asset == quote_asset), None)
    kept = {sym: {c: v for c, v in orders.items() if c in keep_cids}
            for sym, orders in state.open_orders.items()}
    state.open_orders = {}
    for o in snap.open_orders:
        if o.state in TERMINAL_ORDER_STATES:
            continue
        state.open_orders.setdefault(o.symbol, {})[o.client_order_id] = OpenView(
            o.side, o.quantity - o.filled_quantity, o.price)
    for sym, orders in kept.items():
        for cid, view in orders.items():
            state.open_orders.setdefault(sym, {}).setdefault(cid, view)
    if now_ns <= 0:
        # No message clock yet: the day is unknown. Taking a baseline for "day 0" would
        # be replaced by the first real day's, after fills that then go uncounted (and
        # would replace a baseline restored from risk.day after a restart).
        return
    day = state.trading_day.day(now_ns)
    if day != state.day or not state.day_start_marked:
        # A new day's baseline; or today's, taken before a held symbol had a book (its
        # unrealised PnL was missing), taken again once every position can be marked,
        # so a book arriving late is not mistaken for a loss.
        state.day = day
        state.day_start_net = state.net_pnl()
        state.day_start_marked = state.all_marked()


def apply_order_event(state: RiskState, ev: OrderEvent) -> None:
    orders = state.open_orders.setdefault(ev.symbol, {})
    if ev.state in TERMINAL_ORDER_STATES:
        orders.pop(ev.client_order_id, None)
    else:
        orders[ev.client_order_id] = OpenView(ev.side, ev.quantity - ev.filled_quantity,
                                              ev.price)


def record_approval(
    state: RiskState, symbol: str, cid: str, side: str, price: Decimal, quantity: Decimal,
    now_ns: int,
) -> None:
    """An order leaves for the executor: it counts for cooldown and rate at once and
    is open until an order event or a snapshot says otherwise."""
    state.last_order_ns[symbol] = now_ns
    state.recent_orders_ns.append(now_ns)
    state.open_orders.setdefault(symbol, {})[cid] = OpenView(side, quantity, price)
    if side == "buy" and state.free_quote is not None:
        state.free_quote -= price * quantity


def forget_order(state: RiskState, symbol: str, cid: str, side: str, notional: Decimal) -> None:
    """The executor definitely refused it: it never existed."""
    if state.open_orders.get(symbol, {}).pop(cid, None) is not None:
        if side == "buy" and state.free_quote is not None:
            state.free_quote += notional


def orders_in_last_minute(state: RiskState, now_ns: int) -> int:
    """Orders sent in (now - 60 s, now]. Old entries are pruned; the clock values need
    not arrive in order."""
    horizon = now_ns - MINUTE_NS
    if state.recent_orders_ns and min(state.recent_orders_ns) <= horizon:
        state.recent_orders_ns = deque(t for t in state.recent_orders_ns if t > horizon)
    return sum(1 for t in state.recent_orders_ns if t <= now_ns)
