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

from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
Level = tuple[Decimal, Decimal]  # (price, amount)


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """Who sent a message and when. (source, incarnation, seq) lets a subscriber
    detect gaps and restarts: seq restarts at 1 for every new incarnation."""

    schema: int
    source: str
    incarnation: str
    seq: int
    wall_ns: int
    mono_ns: int


class Msg(msgspec.Struct, tag=True, kw_only=True):
    """Base of every body; the class name is the tag on the wire."""


# --- market data -----------------------------------------------------------------


class BookSnapshot(Msg):
    """Top-N order book for one symbol. Topic ``md.book.<SYMBOL>``."""

    symbol: str
    bids: list[Level]
    asks: list[Level]
    source: Literal["ws", "rest", "replay"]
    exchange_ts_ms: int
    recv_wall_ns: int
    recv_mono_ns: int
    age_ms: int
    change_set: int | None = None


class FeedStatus(Msg):
    """Freshness of one symbol's data. Topic ``md.status``. Consumers fail closed
    on ``fresh=False``."""

    symbol: str
    fresh: bool
    source: str
    age_ms: int | None
    reason: str = ""


class SymbolRules(Msg):
    """Exchange rules for a symbol (from exchangeinfo). Topic ``md.rules``."""

    symbol: str
    base: str
    quote: str
    price_scale: int
    qty_scale: int
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    min_total: Decimal
    status: str = "TRADING"


# --- trading flow ------------------------------------------------------------------


class Intent(Msg):
    """What the strategy wants. Topic ``intent.<SYMBOL>``; also sent to risk by REQ.
    ``intent_id`` is deterministic: the same decision yields the same id."""

    intent_id: str
    symbol: str
    side: Side
    order_type: OrderType
    price: Decimal
    quantity: Decimal
    reason: str
    ttl_s: float
    strategy: str
    created_wall_ns: int
    book_mono_ns: int = 0  # receive time of the book that triggered it (latency)
    boot: int = 0  # the strategy host's boot number, part of the id (a replay reuses it)


class RiskDecision(Msg):
    """Risk's verdict on an intent. Topic ``decision.<SYMBOL>``."""

    intent_id: str
    symbol: str
    verdict: Literal["approved", "resized", "rejected"]
    reasons: list[str]
    side: Side
    order_type: OrderType
    price: Decimal
    quantity: Decimal
    requested_quantity: Decimal
    client_order_id: str = ""
    executor_status: str = ""


class OrderRequest(Msg):
    """An approved order, risk → executor by reliable request."""

    intent_id: str
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    price: Decimal
    quantity: Decimal
    ttl_s: float
    reason: str
    book_mono_ns: int = 0


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

    client_order_id: str
    intent_id: str
    symbol: str
    side: Side
    state: OrderState
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal
    exchange_order_id: int | None = None
    reason: str = ""


class Fill(Msg):
    """One execution. Topic ``fill.<SYMBOL>``."""

    trade_id: str
    exchange_order_id: int
    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: str
    ts_ms: int


class Position(msgspec.Struct, kw_only=True):
    """``realized_pnl`` is GROSS of fees; ``fees`` separately (shared/pnl.py)."""

    symbol: str
    quantity: Decimal
    avg_cost: Decimal
    realized_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)


class Balance(msgspec.Struct, kw_only=True):
    asset: str
    free: Decimal
    locked: Decimal


class OpenOrder(msgspec.Struct, kw_only=True):
    client_order_id: str
    intent_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal
    state: str
    exchange_order_id: int | None = None
    created_wall_ns: int = 0


class KeyCounts(msgspec.Struct, kw_only=True):
    pending: int = 0
    unknown: int = 0
    failed: int = 0
    committed: int = 0


class Latches(msgspec.Struct, kw_only=True):
    kill_switch: bool = False
    safety_latch: bool = False
    paused: bool = False
    reason: str = ""


class PortfolioSnapshot(Msg):
    """Positions, balances, open orders, latches and key counts as the executor
    knows them. Topic ``portfolio``; also the reply to ``SnapshotQuery``."""

    positions: list[Position]
    balances: list[Balance]
    open_orders: list[OpenOrder]
    latches: Latches
    keys: KeyCounts
    recovering: bool = False


# --- control and observability -------------------------------------------------------


class Control(Msg):
    """Operator controls broadcast on topic ``control``. ``target`` is an actor name
    or ``*``."""

    command: Literal["pause", "resume", "kill_switch_on", "kill_switch_off", "shutdown"]
    target: str = "*"
    reason: str = ""


class StateTransition(Msg):
    """An FSM transition. Topic ``state.<actor>``."""

    actor: str
    from_state: str
    to_state: str
    trigger: str


# What each actor says about itself in its heartbeat: one typed struct per actor (the
# tag names it), so the supervisor reads fields, not strings it has to parse.


class ExecutorInfo(Msg):
    kill_switch: bool = False
    safety_latch: bool = False
    paused: bool = False
    latch_reason: str = ""
    recovering: bool = False
    mode: str = ""
    db: str = ""
    unresolvable_keys: int = 0
    private_ws: str = ""
    halt: str = ""  # why submits are halted now (exchange unreachable, disk), "" if not
    venue: str = ""


class RiskInfo(Msg):
    gates: list[str]  # closed global gates; empty when open
    fresh: list[str]  # symbols with fresh data
    daily_loss: Decimal = Decimal(0)  # risk's own count of today's realised loss
    max_daily_loss: Decimal = Decimal(0)


class SymbolFreshness(msgspec.Struct, kw_only=True):
    symbol: str
    fresh: bool
    source: str
    age_ms: int | None


class MarketdataInfo(Msg):
    source: str
    ws_connected: bool
    symbols: list[SymbolFreshness]


class StrategyInfo(Msg):
    synced: bool
    pending: list[str]
    trade_every_tick: bool
    plugin: str = ""
    boot: int = 0
    plugin_paused: list[str] = []


class RecorderInfo(Msg):
    segment: str
    recording: bool = True
    recording_reason: str = ""
    disk_warning: str = ""
    housekeeping_error: str = ""
    directory: str = ""


class ReconcilerInfo(Msg):
    latched: bool


class DashboardInfo(Msg):
    url: str
    bind_error: str = ""


class AlertsInfo(Msg):
    last_error: str = ""


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

    actor: str
    pid: int
    state: str
    ready: bool
    uptime_s: float
    counters: dict[str, int]
    info: ActorInfo | None = None
    log_sink: str = ""  # non-empty: the actor's log file is failing, and why


class SymbolPnl(msgspec.Struct, kw_only=True):
    """One symbol's PnL by the definition in shared/pnl.py: realized gross of fees,
    unrealized at ``mark`` (the mid; None: no book), net = realized + unrealized - fees."""

    symbol: str
    position: Decimal
    avg_cost: Decimal
    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    mark: Decimal | None = None
    net: Decimal = Decimal(0)


class ReconcileReport(Msg):
    """Result of a reconcile round. Topic ``reconcile.report``."""

    ok: bool
    keys: KeyCounts
    drift_found: int
    drift_fixed: int
    failures: dict[str, int]  # consecutive failures per symbol
    pnl: list[SymbolPnl]
    details: list[str] = []
    latch_set: bool = False


# --- commands (REQ/REP) --------------------------------------------------------------


class SubmitIntent(Msg):
    """strategy → risk."""

    intent: Intent


class SubmitOrder(Msg):
    """risk → executor."""

    order: OrderRequest


class CancelOrder(Msg):
    client_order_id: str
    reason: str = ""


class SnapshotQuery(Msg):
    pass


class ReconcileQuery(Msg):
    symbol: str = ""  # empty: every symbol


class SetLatch(Msg):
    latch: Literal["kill_switch", "safety_latch", "paused"]
    value: bool
    reason: str = ""


class Ping(Msg):
    pass


class ResolveOrder(Msg):
    """Operator → executor: settle an order the executor could not (VANISHED) as
    cancelled or filled (at its limit price, no fee), audited in the DB."""

    client_order_id: str
    resolution: Literal["cancelled", "filled"]
    reason: str
    operator: str = ""


class Incident(Msg):
    """Surprising venue data, recorded by the executor instead of crashing on it (id
    collision, an order the venue no longer knows, a fill of no order of ours, a venue
    outage, a disk fault, a breached hard cap). Topic ``incident.<kind>``. ``latch``:
    the latch it set ("" if none)."""

    id: int
    kind: str
    detail: str
    symbol: str = ""
    client_order_id: str = ""
    latch: str = ""


class SupervisorCommand(Msg):
    """CLI → supervisor control socket."""

    command: Literal[
        "status", "stop", "restart", "kill_switch", "pause", "resume", "latch_clear"
    ]
    actor: str = ""
    value: bool = False
    reason: str = ""


class Ack(Msg):
    detail: str = ""


class OrderAck(Msg):
    """executor → risk: the order's idempotency state after the request."""

    client_order_id: str
    status: Literal["accepted", "duplicate", "rejected"]
    key_status: str  # PENDING / COMMITTED / UNKNOWN / FAILED
    reason: str = ""


class IntentAck(Msg):
    """risk → strategy."""

    intent_id: str
    verdict: Literal["approved", "resized", "rejected"]
    reasons: list[str]


class ReconcileResult(Msg):
    ok: bool
    drift_found: int
    drift_fixed: int
    failed_symbols: list[str]
    details: list[str] = []


class StatusReply(Msg):
    """supervisor → CLI; ``json`` is the status document."""

    json: str


# --- channels --------------------------------------------------------------------------
# Each socket decodes only the union of what may arrive on it: a tag from another
# channel (a SubmitOrder published on the data plane, a SetLatch sent to risk) is a
# validation error, dropped and counted like any other malformed frame.

DataBody = (
    BookSnapshot
    | FeedStatus
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

RiskCommand = SubmitIntent | Ping
"""Commands risk serves on ``cmd.risk``."""

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
    Parametrised by the channel's union: ``CommandRequest[ExecutorCommand]``."""

    request_id: str
    sender: str
    body: B


class CommandReply(msgspec.Struct, array_like=True):
    request_id: str
    ok: bool
    error: str
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
        case FeedStatus():
            return "md.status"
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
