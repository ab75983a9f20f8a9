"""Every message that crosses the bus, in one place.

A frame on the data plane is ``[topic, payload]``; the payload is msgpack of a
``Packet``: the envelope plus exactly one body from the tagged union ``Body``.
Commands (REQ/REP) carry a ``CommandRequest`` / ``CommandReply`` packet whose body
is one of the command or reply structs below.

Money is always ``Decimal`` (msgpack carries it as a string, so no float ever
touches a price or a quantity). Decoding is strict: unknown tags, missing fields
or wrong types raise ``msgspec.ValidationError`` and the frame is dropped by the
transport, counted and logged.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from bus.limits import MAX_LIST_LEN, MAX_MAP_LEN, MAX_REASON_LEN, MAX_STR_LEN, MAX_TEXT_LEN

SCHEMA_VERSION = 1

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
Level = tuple[Decimal, Decimal]  # (price, amount)

# Bounds on every variable-size field, checked by msgspec while decoding (bus/limits.py).
_BOUNDED = Meta(max_length=MAX_LIST_LEN)
Str = Annotated[str, Meta(max_length=MAX_STR_LEN)]  # names, ids, symbols, states
Text = Annotated[str, Meta(max_length=MAX_REASON_LEN)]  # reasons, errors, paths
Doc = Annotated[str, Meta(max_length=MAX_TEXT_LEN)]  # a whole document (status JSON)
Texts = Annotated[list[Text], _BOUNDED]
Levels = Annotated[list[Level], _BOUNDED]
Counts = Annotated[dict[Str, int], Meta(max_length=MAX_MAP_LEN)]


def _finite(name: str, value: Decimal) -> None:
    # "NaN" and "Infinity" decode into Decimal; no price or quantity may be either.
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")


def _nonneg(name: str, value: Decimal) -> None:
    _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _positive(name: str, value: Decimal) -> None:
    _finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _finite_float(name: str, value: float, *, minimum: float = 0.0) -> None:
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be finite and >= {minimum}, got {value}")


def _levels(name: str, levels: list[Level]) -> None:
    # Every subscriber decodes every book (40 levels): the common case is checked
    # without building a name per level; a bad level goes through the checks that say
    # which bound it broke (is_finite first: comparing a NaN raises).
    for price, amount in levels:
        if not (price.is_finite() and amount.is_finite() and price > 0 and amount >= 0):
            _positive(f"{name} price", price)
            _nonneg(f"{name} amount", amount)


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """Who sent a message and when. (source, incarnation, seq) lets a subscriber
    detect gaps and restarts: seq restarts at 1 for every new incarnation."""

    schema: int
    source: Str
    incarnation: Str
    seq: int
    wall_ns: int
    mono_ns: int


class Msg(msgspec.Struct, tag=True, kw_only=True):
    """Base of every body; the class name is the tag on the wire."""


# --- market data -----------------------------------------------------------------


class BookSnapshot(Msg):
    """Top-N order book for one symbol. Topic ``md.book.<SYMBOL>``."""

    symbol: Str
    bids: Levels
    asks: Levels
    source: Literal["ws", "rest", "replay"]
    exchange_ts_ms: int
    recv_wall_ns: int
    recv_mono_ns: int
    age_ms: int
    change_set: int | None = None

    def __post_init__(self) -> None:
        _levels("bids", self.bids)
        _levels("asks", self.asks)


class PublicTrade(Msg):
    """A trade on the exchange's public tape (anyone's, not only ours), as the WebSocket
    ``trade`` channel reports it live. Topic ``md.trade.<SYMBOL>``. The join snapshot's
    recent trades and the REST fallback are not published: a strategy hears each trade
    once, when it happens, or not at all."""

    symbol: Str
    trade_id: Str
    price: Decimal
    quantity: Decimal
    side: Literal["buy", "sell"]  # the taker's side
    exchange_ts_ms: int
    recv_wall_ns: int

    def __post_init__(self) -> None:
        _positive("price", self.price)
        _positive("quantity", self.quantity)


class ClockTick(Msg):
    """The bus clock (topic ``md.clock``), from marketdata every ``clock_tick_ms``: its
    envelope ``wall_ns`` is the time. Time-driven re-evaluations (the strategy's
    throttle trailing edge) run on it instead of a local timer, so they are recorded
    inputs and a replay makes them at the same point of the message stream."""

    interval_ms: int


class ReplayStart(Msg):
    """``replay --verify`` only (topic ``replay.start``): the point of the replayed
    stream where the recorded ``actor`` began to take input (its first heartbeat that
    came back through the bus, ``Heartbeat.counters["joined_hb_seq"]``). The replay's
    actor of that name ignores replayed input before it, as the recorded one never saw
    it."""

    actor: Str


class FeedStatus(Msg):
    """Freshness of one symbol's data. Topic ``md.status``. Consumers fail closed
    on ``fresh=False``."""

    symbol: Str
    fresh: bool
    source: Str
    age_ms: int | None
    reason: Text = ""


class SymbolRules(Msg):
    """Exchange rules for a symbol (from exchangeinfo). Topic ``md.rules``."""

    symbol: Str
    base: Str
    quote: Str
    price_scale: int
    qty_scale: int
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    min_total: Decimal
    status: Str = "TRADING"

    def __post_init__(self) -> None:
        _nonneg("tick_size", self.tick_size)  # 0: exchangeinfo named no tick (scale rules only)
        _nonneg("min_price", self.min_price)
        _nonneg("max_price", self.max_price)
        _nonneg("min_total", self.min_total)


# --- trading flow ------------------------------------------------------------------


class Intent(Msg):
    """What the strategy wants. Topic ``intent.<SYMBOL>``; also sent to risk by REQ.
    ``intent_id`` is deterministic: the same decision yields the same id."""

    intent_id: Str
    symbol: Str
    side: Side
    order_type: OrderType
    price: Decimal
    quantity: Decimal
    reason: Text
    ttl_s: float
    strategy: Str
    created_wall_ns: int
    book_mono_ns: int = 0  # receive time of the book that triggered it (latency)

    def __post_init__(self) -> None:
        _nonneg("price", self.price)  # 0: a market order names no price
        _positive("quantity", self.quantity)
        _finite_float("ttl_s", self.ttl_s)
    boot: int = 0  # the strategy host's boot number, part of the id (a replay reuses it)


class RiskDecision(Msg):
    """Risk's verdict on an intent. Topic ``decision.<SYMBOL>``."""

    intent_id: Str
    symbol: Str
    verdict: Literal["approved", "resized", "rejected"]
    reasons: Texts
    side: Side
    order_type: OrderType
    price: Decimal
    quantity: Decimal
    requested_quantity: Decimal
    client_order_id: Str = ""
    executor_status: Str = ""

    def __post_init__(self) -> None:
        _nonneg("price", self.price)
        _nonneg("quantity", self.quantity)  # 0 when rejected
        _nonneg("requested_quantity", self.requested_quantity)


class OrderRequest(Msg):
    """An approved order, risk → executor by reliable request."""

    intent_id: Str
    client_order_id: Str
    symbol: Str
    side: Side
    order_type: OrderType
    price: Decimal
    quantity: Decimal
    ttl_s: float
    reason: Text
    book_mono_ns: int = 0

    def __post_init__(self) -> None:
        _nonneg("price", self.price)
        _positive("quantity", self.quantity)
        _finite_float("ttl_s", self.ttl_s)


OrderState = Literal[
    "PENDING",  # reserved in the DB, not yet sent
    "SUBMITTED",  # sent, outcome not yet known
    "OPEN",
    "PARTIAL",
    "FILLED",
    "CANCELED",
    "REJECTED",
    "FAILED",  # never reached the exchange (probe proved it); safe to decide anew
    "UNKNOWN",  # ambiguous outcome, being probed
    "VANISHED",  # held open here, unknown to the exchange after the settle window:
    # terminal until an operator resolves it (ResolveOrder) as CANCELED or FILLED
]
TERMINAL_ORDER_STATES: frozenset[str] = frozenset({"FILLED", "CANCELED", "REJECTED", "FAILED",
                                                   "VANISHED"})


class OrderEvent(Msg):
    """Every order state change. Topic ``order.<SYMBOL>``."""

    client_order_id: Str
    intent_id: Str
    symbol: Str
    side: Side
    state: OrderState
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal
    exchange_order_id: int | None = None
    reason: Text = ""

    def __post_init__(self) -> None:
        _nonneg("price", self.price)
        _nonneg("quantity", self.quantity)
        _nonneg("filled_quantity", self.filled_quantity)


class Fill(Msg):
    """One execution. Topic ``fill.<SYMBOL>``."""

    trade_id: Str
    exchange_order_id: int
    client_order_id: Str
    symbol: Str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: Str
    ts_ms: int

    def __post_init__(self) -> None:
        _positive("price", self.price)
        _positive("quantity", self.quantity)
        _finite("fee", self.fee)


class Position(msgspec.Struct, kw_only=True):
    """``realized_pnl`` is GROSS of fees; ``fees`` separately (shared/pnl.py)."""

    symbol: Str
    quantity: Decimal
    avg_cost: Decimal
    realized_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        _finite("quantity", self.quantity)
        _nonneg("avg_cost", self.avg_cost)
        _finite("realized_pnl", self.realized_pnl)
        _finite("fees", self.fees)


class Balance(msgspec.Struct, kw_only=True):
    asset: Str
    free: Decimal
    locked: Decimal

    def __post_init__(self) -> None:
        _nonneg("free", self.free)
        _nonneg("locked", self.locked)


class OpenOrder(msgspec.Struct, kw_only=True):
    client_order_id: Str
    intent_id: Str
    symbol: Str
    side: Side
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal
    state: Str
    exchange_order_id: int | None = None
    created_wall_ns: int = 0

    def __post_init__(self) -> None:
        _nonneg("price", self.price)
        _nonneg("quantity", self.quantity)
        _nonneg("filled_quantity", self.filled_quantity)


class KeyCounts(msgspec.Struct, kw_only=True):
    pending: int = 0
    unknown: int = 0
    failed: int = 0
    committed: int = 0


class Latches(msgspec.Struct, kw_only=True):
    kill_switch: bool = False
    safety_latch: bool = False
    paused: bool = False
    reason: Text = ""


class PortfolioSnapshot(Msg):
    """Positions, balances, open orders, latches and key counts as the executor
    knows them. Topic ``portfolio``; also the reply to ``SnapshotQuery``."""

    positions: Annotated[list[Position], _BOUNDED]
    balances: Annotated[list[Balance], _BOUNDED]
    open_orders: Annotated[list[OpenOrder], _BOUNDED]
    latches: Latches
    keys: KeyCounts
    recovering: bool = False


# --- control and observability -------------------------------------------------------


class Control(Msg):
    """Operator controls broadcast on topic ``control``. ``target`` is an actor name
    or ``*``."""

    command: Literal["pause", "resume", "kill_switch_on", "kill_switch_off", "shutdown"]
    target: Str = "*"
    reason: Text = ""


class StateTransition(Msg):
    """An FSM transition. Topic ``state.<actor>``."""

    actor: Str
    from_state: Str
    to_state: Str
    trigger: Text


# What each actor says about itself in its heartbeat: one typed struct per actor (the
# tag names it), so the supervisor reads fields, not strings it has to parse.


class ExecutorInfo(Msg):
    kill_switch: bool = False
    safety_latch: bool = False
    paused: bool = False
    latch_reason: Text = ""
    # Wall time (epoch s) each latch that is set now was set, from the executor's DB.
    latch_set_at: Annotated[dict[Str, float], Meta(max_length=MAX_MAP_LEN)] = {}
    recovering: bool = False
    mode: Str = ""
    db: Text = ""
    unresolvable_keys: int = 0
    private_ws: Text = ""
    halt: Text = ""  # why submits are halted now (exchange unreachable, disk), "" if not
    venue: Str = ""

    def __post_init__(self) -> None:
        for name, at in self.latch_set_at.items():
            _finite_float(f"latch_set_at[{name}]", at)


class RiskInfo(Msg):
    gates: Texts  # closed global gates; empty when open
    fresh: Texts  # symbols with fresh data
    daily_loss: Decimal = Decimal(0)  # drop of net PnL since the day's baseline (>0: loss)
    max_daily_loss: Decimal = Decimal(0)
    day_start_net: Decimal = Decimal(0)  # the baseline: net PnL when today's count began
    # The baseline's trading day (-1: none yet) and whether every held position had a
    # mark then: with day_start_net, what data/risk.day holds (replay --verify seeds a
    # replayed risk with the recorded one).
    day: int = -1
    day_marked: bool = False

    def __post_init__(self) -> None:
        _finite("daily_loss", self.daily_loss)
        _finite("max_daily_loss", self.max_daily_loss)
        _finite("day_start_net", self.day_start_net)


class SymbolFreshness(msgspec.Struct, kw_only=True):
    symbol: Str
    fresh: bool
    source: Str
    age_ms: int | None


class MarketdataInfo(Msg):
    source: Str
    ws_connected: bool
    symbols: Annotated[list[SymbolFreshness], _BOUNDED]


class StrategyInfo(Msg):
    synced: bool
    pending: Texts
    trade_every_tick: bool
    plugin: Str = ""
    boot: int = 0
    plugin_paused: Texts = []


class RecorderInfo(Msg):
    segment: Text
    recording: bool = True
    recording_reason: Text = ""
    disk_warning: Text = ""
    housekeeping_error: Text = ""
    directory: Text = ""


class ReconcilerInfo(Msg):
    latched: bool


class DashboardInfo(Msg):
    url: Text
    bind_error: Text = ""


class AlertsInfo(Msg):
    last_error: Text = ""


ActorInfo = (
    ExecutorInfo
    | RiskInfo
    | MarketdataInfo
    | StrategyInfo
    | RecorderInfo
    | ReconcilerInfo
    | DashboardInfo
    | AlertsInfo
)


class Heartbeat(Msg):
    """Liveness, every second. Topic ``hb.<actor>``."""

    actor: Str
    pid: int
    state: Str
    ready: bool
    uptime_s: float
    counters: Counts
    info: ActorInfo | None = None
    log_sink: Text = ""  # non-empty: the actor's log file is failing, and why

    def __post_init__(self) -> None:
        _finite_float("uptime_s", self.uptime_s)


class SymbolPnl(msgspec.Struct, kw_only=True):
    """One symbol's PnL by the definition in shared/pnl.py: realized gross of fees,
    unrealized at ``mark`` (the mid; None: no book), net = realized + unrealized - fees."""

    symbol: Str
    position: Decimal
    avg_cost: Decimal
    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    mark: Decimal | None = None
    net: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name in ("position", "avg_cost", "realized", "unrealized", "fees", "net"):
            _finite(name, getattr(self, name))
        if self.mark is not None:
            _finite("mark", self.mark)


class ReconcileReport(Msg):
    """Result of a reconcile round. Topic ``reconcile.report``."""

    ok: bool
    keys: KeyCounts
    drift_found: int
    drift_fixed: int
    failures: Counts  # consecutive failures per symbol
    pnl: Annotated[list[SymbolPnl], _BOUNDED]
    details: Texts = []
    latch_set: bool = False


# --- commands (REQ/REP) --------------------------------------------------------------


class SubmitIntent(Msg):
    """strategy → risk."""

    intent: Intent


class SubmitOrder(Msg):
    """risk → executor."""

    order: OrderRequest


class CancelOrder(Msg):
    client_order_id: Str
    reason: Text = ""


class SnapshotQuery(Msg):
    # True: also publish the snapshot on ``portfolio``. Strategy and risk ask so and
    # apply only what comes on the bus (a recorded input), never the reply's copy.
    publish: bool = False


class ReconcileQuery(Msg):
    symbol: Str = ""  # empty: every symbol


class SetLatch(Msg):
    latch: Literal["kill_switch", "safety_latch", "paused"]
    value: bool
    reason: Text = ""


class Ping(Msg):
    pass


class ResolveOrder(Msg):
    """Operator → executor: settle an order the executor could not (VANISHED) as
    cancelled or filled (at its limit price, no fee), audited in the DB."""

    client_order_id: Str
    resolution: Literal["cancelled", "filled"]
    reason: Text
    operator: Str = ""


class Incident(Msg):
    """Surprising venue data, recorded by the executor instead of crashing on it (id
    collision, an order the venue no longer knows, a fill of no order of ours, a venue
    outage, a disk fault, a breached hard cap). Topic ``incident.<kind>``. ``latch``:
    the latch it set ("" if none)."""

    id: int
    kind: Str
    detail: Text
    symbol: Str = ""
    client_order_id: Str = ""
    latch: Str = ""


class SupervisorCommand(Msg):
    """CLI → supervisor control socket."""

    command: Literal[
        "status", "stop", "restart", "kill_switch", "pause", "resume", "latch_clear"
    ]
    actor: Str = ""
    value: bool = False
    reason: Text = ""


class Ack(Msg):
    detail: Text = ""


class OrderAck(Msg):
    """executor → risk: the order's idempotency state after the request."""

    client_order_id: Str
    status: Literal["accepted", "duplicate", "rejected"]
    key_status: Str  # PENDING / COMMITTED / UNKNOWN / FAILED
    reason: Text = ""


class IntentAck(Msg):
    """risk → strategy."""

    intent_id: Str
    verdict: Literal["approved", "resized", "rejected"]
    reasons: Texts


class ReconcileResult(Msg):
    ok: bool
    drift_found: int
    drift_fixed: int
    failed_symbols: Texts
    details: Texts = []


class StatusReply(Msg):
    """supervisor → CLI; ``json`` is the status document."""

    json: Doc


# --- channels --------------------------------------------------------------------------
# Each socket decodes only the union of what may arrive on it: a tag from another
# channel (a SubmitOrder published on the data plane, a SetLatch sent to risk) is a
# validation error, dropped and counted like any other malformed frame.

DataBody = (
    BookSnapshot
    | PublicTrade
    | FeedStatus
    | ClockTick
    | ReplayStart
    | SymbolRules
    | Intent
    | RiskDecision
    | OrderEvent
    | Fill
    | PortfolioSnapshot
    | Control
    | StateTransition
    | Heartbeat
    | ReconcileReport
    | Incident
)
"""The data plane (PUB/SUB through the proxy; also what the recorder records)."""

ExecutorCommand = (SubmitOrder | CancelOrder | SnapshotQuery | ReconcileQuery | SetLatch | Ping
                   | ResolveOrder)
"""Commands the executor serves on ``cmd.executor``."""

RiskCommand = SubmitIntent | CancelOrder | Ping
"""Commands risk serves on ``cmd.risk`` (a strategy's cancels go through risk: only risk
may submit or cancel at the executor, bus/roles.py)."""

PingCommand = Ping
"""Commands any other actor serves (liveness only)."""

SupervisorChannel = SupervisorCommand | Ping
"""Commands the supervisor's control socket serves (the operator CLI)."""

ReplyBody = Ack | OrderAck | IntentAck | ReconcileResult | StatusReply | PortfolioSnapshot
"""Every reply body; ``None`` is a bare acknowledgement."""

B = TypeVar("B")


class Packet(msgspec.Struct, array_like=True):
    """A data-plane payload: envelope + body."""

    env: Envelope
    body: DataBody


class CommandRequest(msgspec.Struct, Generic[B], array_like=True):
    """A command. ``request_id`` is reused on every retry of the same command so the
    server can answer a retry from its reply cache instead of executing twice.
    Parametrised by the channel's union: ``CommandRequest[ExecutorCommand]``.
    ``sender`` is what the caller says it is on the wire; a ``RequestServer`` replaces it
    with the caller's authenticated CURVE identity before any handler sees it."""

    request_id: Str
    sender: Str
    body: B


class CommandReply(msgspec.Struct, array_like=True):
    request_id: Str
    ok: bool
    error: Text
    body: ReplyBody | None = None


class EnvelopeOnly(msgspec.Struct, array_like=True):
    """A data-plane payload with its body left undecoded (``msgspec.Raw``): for code
    that only reads or rewrites the envelope (the recorder, replay's reframer)."""

    env: Envelope
    body: msgspec.Raw


def _members(union: Any) -> tuple[type[Msg], ...]:
    return tuple(getattr(union, "__args__", (union,)))


DATA_BODY_TYPES: tuple[type[Msg], ...] = _members(DataBody)
COMMAND_TYPES: dict[str, tuple[type[Msg], ...]] = {
    "executor": _members(ExecutorCommand),
    "risk": _members(RiskCommand),
    "supervisor": _members(SupervisorChannel),
}
REPLY_TYPES: tuple[type[Msg], ...] = _members(ReplyBody)
ALL_BODY_TYPES: tuple[type[Msg], ...] = tuple(dict.fromkeys(
    (*DATA_BODY_TYPES, *(t for ts in COMMAND_TYPES.values() for t in ts), *REPLY_TYPES)))

packet_encoder = msgspec.msgpack.Encoder(decimal_format="string")
packet_decoder = msgspec.msgpack.Decoder(Packet)
envelope_decoder = msgspec.msgpack.Decoder(EnvelopeOnly)
reply_decoder = msgspec.msgpack.Decoder(CommandReply)


def request_decoder(channel: Any) -> msgspec.msgpack.Decoder[Any]:
    """A decoder of ``CommandRequest``s whose body must be one of ``channel``."""
    return msgspec.msgpack.Decoder(CommandRequest[channel])  # type: ignore[valid-type]


def topic_for(body: Msg, source: str) -> str:
    """The canonical topic of a data-plane body."""
    match body:
        case BookSnapshot(symbol=s):
            return f"md.book.{s}"
        case PublicTrade(symbol=s):
            return f"md.trade.{s}"
        case FeedStatus():
            return "md.status"
        case ClockTick():
            return "md.clock"
        case ReplayStart():
            return "replay.start"
        case SymbolRules(symbol=s):
            return f"md.rules.{s}"
        case Intent(symbol=s):
            return f"intent.{s}"
        case RiskDecision(symbol=s):
            return f"decision.{s}"
        case OrderEvent(symbol=s):
            return f"order.{s}"
        case Fill(symbol=s):
            return f"fill.{s}"
        case PortfolioSnapshot():
            return "portfolio"
        case Control():
            return "control"
        case StateTransition():
            return f"state.{source}"
        case Heartbeat():
            return f"hb.{source}"
        case ReconcileReport():
            return "reconcile.report"
        case Incident(kind=k):
            return f"incident.{k}"
    raise ValueError(f"{type(body).__name__} has no data-plane topic")
