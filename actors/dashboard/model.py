"""What the dashboard knows from the bus: books, orders, fills, decisions and rates
(pure state; the actor feeds it, the views read it). Hop latencies are matched by the
shared ``bus.health.HopMatcher`` and observed into the Prometheus histograms; their
windowed quantiles are the supervisor's (status ``bus_health``), not recomputed here.

Bounded everywhere: each table keeps its last ``rows`` entries and each chart series
its last ``points``, so a week-long session costs the same memory as a minute.
Money stays ``Decimal`` (printed as the exchange's strings); only the chart series
are floats, which draw a picture and feed no figure.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from bus.health import HopMatcher
from bus.messages import (
    BookSnapshot,
    FeedStatus,
    Fill,
    Intent,
    OrderEvent,
    Packet,
    RiskDecision,
)

MID_SAMPLE_S = 0.5  # one chart point per symbol per half second is plenty for the eye
RATE_WINDOW_S = 10.0


def family(topic: str) -> str:
    """``md.book.BTCTRY`` → ``md.book``; ``hb.risk`` → ``hb``."""
    parts = topic.split(".")
    if parts[0] == "md" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


@dataclass
class BookTop:
    bid: Decimal | None
    ask: Decimal | None
    wall: float
    age_ms: int
    source: str


@dataclass
class OrderRow:
    client_order_id: str
    intent_id: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    filled: Decimal
    state: str
    exchange_order_id: int | None
    reason: str
    first_wall: float
    last_wall: float
    # (wall time, state, filled, reason) of every event, oldest first
    history: list[tuple[float, str, str, str]] = field(default_factory=list)


@dataclass
class DecisionRow:
    wall: float
    kind: str  # "intent" | "decision"
    intent_id: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    verdict: str
    reasons: str


@dataclass
class FillRow:
    wall: float
    trade_id: str
    client_order_id: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: str


class Series:
    """(time, value) points, bounded."""

    def __init__(self, points: int) -> None:
        self.t: deque[float] = deque(maxlen=points)
        self.v: deque[float] = deque(maxlen=points)

    def add(self, t: float, v: float) -> None:
        self.t.append(t)
        self.v.append(v)


class BusModel:
    def __init__(self, *, points: int = 3600, rows: int = 500,
                 on_hop: Callable[[str, float], None] | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.points, self.rows = points, rows
        self.wall = wall
        self.books: dict[str, BookTop] = {}
        self.feed: dict[str, FeedStatus] = {}
        self.mids: dict[str, Series] = {}
        self._last_mid_t: dict[str, float] = {}
        # marks on the markets chart: (wall, price, side) of our orders and fills
        self.order_marks: dict[str, deque[tuple[float, float, str]]] = {}
        self.fill_marks: dict[str, deque[tuple[float, float, str]]] = {}
        self.orders: OrderedDict[str, OrderRow] = OrderedDict()
        self.fills: deque[FillRow] = deque(maxlen=rows)
        self.decisions: deque[DecisionRow] = deque(maxlen=rows)
        self._on_hop = on_hop
        self.hops = HopMatcher("dashboard", self._hop_sample)
        self.messages: Counter[str] = Counter()  # per topic family, since start
        self._recent: deque[tuple[float, str]] = deque()  # (mono, family) for rates

    # --- input ------------------------------------------------------------------------
    def apply(self, topic: str, packet: Packet, recv_mono_ns: int) -> None:
        fam = family(topic)
        self.messages[fam] += 1
        mono = recv_mono_ns / 1e9
        self._recent.append((mono, fam))
        self._trim_recent(mono)
        self.hops.observe(packet, recv_mono_ns)
        body = packet.body
        now = self.wall()
        if isinstance(body, BookSnapshot):
            self._book(body, now)
        elif isinstance(body, FeedStatus):
            self.feed[body.symbol] = body
        elif isinstance(body, Intent):
            self.decisions.append(DecisionRow(
                now, "intent", body.intent_id, body.symbol, body.side, body.price,
                body.quantity, "", body.reason))
        elif isinstance(body, RiskDecision):
            self.decisions.append(DecisionRow(
                now, "decision", body.intent_id, body.symbol, body.side, body.price,
                body.quantity, body.verdict, ", ".join(body.reasons)))
        elif isinstance(body, OrderEvent):
            self._order(body, now)
        elif isinstance(body, Fill):
            self._fill(body, now)

    def _hop_sample(self, hop: str, ms: float, at_ns: int) -> None:
        if self._on_hop is not None:
            self._on_hop(hop, ms / 1000.0)

    def _trim_recent(self, mono: float) -> None:
        while self._recent and mono - self._recent[0][0] > RATE_WINDOW_S:
            self._recent.popleft()

    def _book(self, b: BookSnapshot, now: float) -> None:
        bid = b.bids[0][0] if b.bids else None
        ask = b.asks[0][0] if b.asks else None
        self.books[b.symbol] = BookTop(bid, ask, now, b.age_ms, b.source)
        if bid is None or ask is None:
            return
        if now - self._last_mid_t.get(b.symbol, 0.0) < MID_SAMPLE_S:
            return
        self._last_mid_t[b.symbol] = now
        self.mids.setdefault(b.symbol, Series(self.points)).add(now, float((bid + ask) / 2))

    def _order(self, e: OrderEvent, now: float) -> None:
        row = self.orders.get(e.client_order_id)
        if row is None:
            row = OrderRow(e.client_order_id, e.intent_id, e.symbol, e.side, e.price,
                           e.quantity, e.filled_quantity, e.state, e.exchange_order_id,
                           e.reason, now, now)
            self.orders[e.client_order_id] = row
            self.order_marks.setdefault(e.symbol, deque(maxlen=self.points)).append(
                (now, float(e.price), e.side))
            while len(self.orders) > self.rows:
                self.orders.popitem(last=False)
        row.state, row.filled, row.last_wall = e.state, e.filled_quantity, now
        row.exchange_order_id = e.exchange_order_id or row.exchange_order_id
        row.reason = e.reason or row.reason
        row.history.append((now, e.state, str(e.filled_quantity), e.reason))

    def _fill(self, f: Fill, now: float) -> None:
        self.fills.append(FillRow(now, f.trade_id, f.client_order_id, f.symbol, f.side,
                                  f.price, f.quantity, f.fee, f.fee_asset))
        self.fill_marks.setdefault(f.symbol, deque(maxlen=self.points)).append(
            (now, float(f.price), f.side))

    # --- derived ----------------------------------------------------------------------
    def rates(self, now_mono: float) -> dict[str, float]:
        """Messages per second per topic family over the last RATE_WINDOW_S."""
        self._trim_recent(now_mono)
        counts = Counter(fam for _, fam in self._recent)
        return {fam: n / RATE_WINDOW_S for fam, n in sorted(counts.items())}

    def fills_of(self, client_order_id: str) -> list[FillRow]:
        return [f for f in self.fills if f.client_order_id == client_order_id]

    def decisions_of(self, intent_id: str) -> list[DecisionRow]:
        return [d for d in self.decisions if d.intent_id == intent_id]
