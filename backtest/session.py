"""A backtest that replays a recorded paper session's *timing*: the strategy-level half
of the consistency check (backtest/consistency.py compares what it produces).

The plain backtest (engine.py) decides from the first book, and its executor and
exchange are instantaneous. A live strategy differs in when it may decide, and the
recording shows exactly when: this engine keeps every *decision* and every *fill* its
own (the plug-in through the strategy host, risk's pure decision, the fill model of
fills.py, the fee schedule given), and takes from the recording only the points in the
message stream where the live pipeline's answers arrived:

- **start**: the strategy's input opens where the live one's did (its own first
  heartbeat that came back through the bus, ``joined_hb_seq``); books before that are
  risk's alone;
- **portfolio snapshots**: the host and risk see the backtest's own account (positions,
  balances, open orders) at each recorded ``portfolio`` message, not after every
  change, so a symbol whose position moved waits for a snapshot as long as live did; an
  order risk approved is listed in them (PENDING) until the exchange answers, as the
  executor lists it;
- **risk** takes input from its own join (as the strategy) and judges an intent where
  the session's copy of it came on the bus, on the intent's clock (as the risk actor:
  a feed status that came between the book and the intent counts); the strategy learns
  the verdict where the recorded ``decision.*`` came, and the order reaches the fill
  model where the exchange answered it live (its first order event after PENDING), on
  the latest book recorded by then;
- **fills**: the account moves on the book that fills (a later book or snapshot sees
  it), but the strategy and risk hear of a fill (and of the order's end) where the
  session's executor announced it, so a book between the exchange's fill and its
  announcement is decided on as live did;
- **cancels** take effect where the recorded order event ended that order;
- **trailing evaluations** of the throttle run on the recorded ``md.clock`` ticks, as
  the live actor's do.

A backtest intent finds its recorded timing through the live intent it stands for: the
one of the same symbol and side made on the same message clock (the envelope time of
the book decided on). Not through the intent id: ids also count the live host's epochs,
and a duplicate terminal order event moves the live epoch once more than the order's
single end does here, so an identical decision can carry another id (recordings of
executors before the read-again in ``record_exchange_order`` have CANCELED twice when a
cancel's read-back and a private-feed refresh raced). An intent the session never made
(the two have diverged) has no recorded timing and is answered at once, as in the plain
backtest; the comparison counts them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from actors.risk import state as risk_state
from actors.risk.decision import decide as risk_decide
from actors.strategy import gating
from actors.strategy.api import Strategy
from actors.strategy.host import Outcome
from backtest.data import book_record
from backtest.engine import Backtest, Fees, Result
from backtest.fills import SimFill, SimOrder
from bus.messages import (
    BookSnapshot,
    ClockTick,
    FeedStatus,
    Fill,
    Heartbeat,
    Intent,
    OrderEvent,
    PortfolioSnapshot,
    RiskDecision,
    StrategyInfo,
    SymbolRules,
    packet_decoder,
)
from shared import pnl
from shared.config import Config
from shared.ids import client_order_id
from shared.recording import read_recording

ZERO = Decimal(0)
# What the live strategy subscribes to, and its heartbeats (where its input opened).
TOPICS = ("md.book.", "md.trade.", "md.rules.", "md.status", "md.clock", "portfolio",
          "decision.", "intent.", "order.", "fill.", "hb.strategy", "hb.risk")
JOINERS = ("strategy", "risk")  # actors whose input opens at their own heartbeat
NOT_ON_EXCHANGE = ("PENDING", "REJECTED", "FAILED")


class SessionError(Exception):
    """The recording cannot be checked this way (and why)."""


@dataclass
class LiveIntent:
    intent: Intent
    record: int
    decided_at: int | None = None  # record of risk's decision on the bus
    cid: str = ""  # its order's client id, when one was placed


@dataclass
class Session:
    """What a recorded paper session did, and when (record numbers in ``TOPICS``
    order)."""

    join: int = -1  # record where the strategy's input opened
    risk_join: int = -1  # and risk's
    boot: int = 0
    plugin: str = ""
    balances: dict[str, Decimal] = field(default_factory=dict)
    positions: list[tuple[str, Decimal, Decimal, Decimal, Decimal]] = field(
        default_factory=list)
    intents: list[LiveIntent] = field(default_factory=list)
    by_decision: dict[tuple[str, str, int], list[LiveIntent]] = field(default_factory=dict)
    answered_at: dict[str, int] = field(default_factory=dict)  # client order id -> record
    ended_at: dict[str, int] = field(default_factory=dict)  # cid -> record of its end
    filled_at: dict[str, int] = field(default_factory=dict)  # cid -> record of FILLED
    fill_at: dict[str, list[int]] = field(default_factory=dict)  # cid -> its fills' records
    orders: dict[str, OrderEvent] = field(default_factory=dict)  # cid -> latest event
    fills: list[Fill] = field(default_factory=list)
    decisions: list[RiskDecision] = field(default_factory=list)
    restarted_ns: int = 0  # the strategy restarted (a second incarnation) then
    end_ns: int = 0


def _packets(recording: str | os.PathLike[str]) -> Iterator[tuple[int, str, bytes]]:
    for n, rec in enumerate(read_recording(recording, TOPICS)):
        yield n, rec.topic, rec.payload


def read_session(recording: str | os.PathLike[str]) -> Session:
    """The session's own record: when its strategy joined, with which boot number and
    account, and what it did (intents, decisions, orders, fills), with the record
    number of every answer."""
    s = Session()
    beats: dict[tuple[str, int], int] = {}  # (actor, heartbeat seq) -> record
    incarnation: dict[str, str] = {}  # actor -> its first run's
    joined_seq: dict[str, int] = {}  # actor -> seq of its heartbeat that opened input
    first_snapshot: PortfolioSnapshot | None = None
    undecided: dict[str, list[LiveIntent]] = {}  # intent id -> awaiting a decision
    for n, topic, payload in _packets(recording):
        if topic.startswith("md."):
            continue
        try:
            packet = packet_decoder.decode(payload)
        except msgspec.DecodeError:
            continue
        body = packet.body
        s.end_ns = max(s.end_ns, packet.env.wall_ns)
        match body:
            case Heartbeat() if body.actor in JOINERS and packet.env.source == body.actor:
                actor = body.actor
                inc = incarnation.setdefault(actor, packet.env.incarnation)
                if packet.env.incarnation != inc:
                    if actor == "strategy":
                        s.restarted_ns = s.restarted_ns or packet.env.wall_ns
                    continue
                beats.setdefault((actor, packet.env.seq), n)
                if actor not in joined_seq and body.counters.get("joined_hb_seq", 0):
                    joined_seq[actor] = body.counters["joined_hb_seq"]
                info = body.info
                if isinstance(info, StrategyInfo) and info.plugin:
                    s.plugin = s.plugin or info.plugin
                    s.boot = info.boot
            case PortfolioSnapshot():
                if first_snapshot is None:
                    first_snapshot = body
            case Intent():
                live = LiveIntent(body, n)
                s.intents.append(live)
                s.by_decision.setdefault(_key(body), []).append(live)
                undecided.setdefault(body.intent_id, []).append(live)
            case RiskDecision() if topic.startswith("decision."):
                s.decisions.append(body)
                waiting = undecided.get(body.intent_id)
                if waiting:
                    live = waiting.pop(0)
                    live.decided_at = n
                    live.cid = body.client_order_id
            case OrderEvent():
                cid = body.client_order_id
                s.orders[cid] = body
                if body.state not in NOT_ON_EXCHANGE:
                    s.answered_at.setdefault(cid, n)
                if body.state in ("CANCELED", "EXPIRED"):
                    s.ended_at.setdefault(cid, n)
                elif body.state == "FILLED":
                    s.filled_at.setdefault(cid, n)
            case Fill():
                s.fills.append(body)
                s.fill_at.setdefault(body.client_order_id, []).append(n)
    for actor in JOINERS:
        if (actor, joined_seq.get(actor, -1)) not in beats:
            raise SessionError(f"no heartbeat of the session's {actor} says where its "
                               "input opened (joined_hb_seq): is this a full session "
                               "recording, from the start of the session?")
    s.join = beats[("strategy", joined_seq["strategy"])]
    s.risk_join = beats[("risk", joined_seq["risk"])]
    if first_snapshot is None:
        raise SessionError("no executor snapshot (portfolio) in the recording: the "
                           "starting account is unknown")
    if first_snapshot.open_orders:
        raise SessionError(f"the session began with {len(first_snapshot.open_orders)} "
                           "open orders of an earlier run: only a session that starts "
                           "without open orders can be reproduced")
    s.balances = {b.asset: b.free + b.locked for b in first_snapshot.balances}
    s.positions = [(p.symbol, p.quantity, p.avg_cost, p.realized_pnl, p.fees)
                   for p in first_snapshot.positions]
    if s.intents:
        s.boot = s.intents[0].intent.boot
    return s


def _key(intent: Intent) -> tuple[str, str, int]:
    """The same decision: symbol, side and the message clock it was made on."""
    return intent.symbol, intent.side, intent.created_wall_ns


class SessionBacktest(Backtest):
    """The backtest engine on a session's message stream (see the module docstring)."""

    def __init__(self, cfg: Config, strategy: Strategy, session: Session, *,
                 fees: Fees = Fees()) -> None:
        super().__init__(cfg, strategy, fees=fees, balances=dict(session.balances))
        self.session = session
        self.host.boot = session.boot
        for sym, qty, cost, realized, fee_sum in session.positions:
            self.positions[sym] = pnl.PositionState(qty, cost, realized, fee_sum)
        self.index = -1
        self._due: dict[int, list[Callable[[], None]]] = {}  # record -> actions then
        self.unmatched: list[Intent] = []  # intents the session never made
        self.paired: dict[str, str] = {}  # our client order id -> the session's
        self._claimed: set[int] = set()  # records of live intents already paired
        self._sent: dict[str, SimOrder] = {}  # approved, the exchange has not answered
        self._fills_of: dict[str, int] = {}  # our cid -> fills so far

    # --- driving ------------------------------------------------------------------------
    def run_session(self, recording: str | os.PathLike[str]) -> Result:
        for n, topic, payload in _packets(recording):
            if topic.startswith("md.book."):
                try:
                    clock, body = book_record(payload)
                except (msgspec.DecodeError, ArithmeticError):
                    continue
            else:
                try:
                    packet = packet_decoder.decode(payload)
                except msgspec.DecodeError:
                    continue
                clock, body = packet.env.wall_ns, packet.body
            self.step_record(n, clock, body)
        self.finish()
        return self.result

    def step_record(self, n: int, clock: int, body: object) -> None:
        self.index = n
        self._clock = clock
        if n == self.session.risk_join:
            # Risk's input opens here (its state before is not the live one's: it had
            # none); whatever was fed to it so far is dropped.
            self.risk = risk_state.RiskState()
        if n < self.session.join:
            self._before_join(body)
            return
        if not self.result.start_ns:
            self.result.start_ns = clock
        self.result.end_ns = max(self.result.end_ns, clock)
        for action in self._due.pop(n, ()):
            action()
        if self._apply_market(body, clock):
            return
        match body:
            case ClockTick():
                # The throttle's trailing edge, on the bus clock as live.
                for symbol in sorted(s for s, due in self._trailing.items() if clock >= due):
                    del self._trailing[symbol]
                    self._evaluate(symbol, clock)
            case PortfolioSnapshot():
                self._snapshot()
            case _:
                pass

    def _before_join(self, body: object) -> None:
        """Risk may have joined before the strategy: it has the market's state and the
        executor's snapshots."""
        match body:
            case BookSnapshot() if body.bids and body.asks:
                risk_state.apply_book(self.risk, body)
            case SymbolRules():
                risk_state.apply_rules(self.risk, body)
            case FeedStatus():
                risk_state.apply_feed_status(self.risk, body)
            case PortfolioSnapshot():
                risk_state.apply_snapshot(self.risk, self._portfolio(), self._clock,
                                          self.quote)
            case _:
                pass

    # --- the pipeline's answers, where the session's came --------------------------------
    def _refresh(self) -> None:
        """No instant snapshot: the account reaches the host and risk where the
        recording shows a ``portfolio`` message (``_snapshot``)."""

    def _snapshot(self) -> None:
        super()._refresh()
        for symbol in sorted(self.host.books):  # as the live actor after a snapshot
            self._trigger(symbol, self._clock)

    def _open_orders(self) -> Iterable[tuple[SimOrder, str]]:
        yield from super()._open_orders()
        for order in self._sent.values():
            yield order, "PENDING"

    def _apply_fills(self, fills: list[SimFill]) -> None:
        """The account moves now (a later book sees it); the strategy and risk hear of
        it where the session's executor announced the same fills."""
        seen, ended = self._book_fills(fills)
        if not self._later(self._told_at(fills, ended), lambda: self._tell_fills(seen, ended)):
            self._tell_fills(seen, ended)

    def _told_at(self, fills: list[SimFill], ended: list[SimOrder]) -> int | None:
        """The record of the session's announcement of these fills: its executor's
        FILLED event or the last of the fills, whichever came first; None when the
        session did not have them (the two have diverged)."""
        last = -1
        for f in fills:
            k = self._fills_of.get(f.cid, 0)
            self._fills_of[f.cid] = k + 1
            records = self.session.fill_at.get(self.paired.get(f.cid, ""), [])
            if k >= len(records):
                return None
            last = max(last, records[k])
        done = [self.session.filled_at.get(self.paired.get(o.cid, ""), last) for o in ended]
        return min([last, *done])

    def _later(self, at: int | None, action: Callable[[], None]) -> bool:
        if at is None or at <= self.index:
            return False
        self._due.setdefault(at, []).append(action)
        return True

    def _submit(self, intent: Intent) -> None:
        self.result.intents += 1
        live = self._live(intent)
        if live is None:
            self.unmatched.append(intent)

        def judge() -> None:
            self._judge(intent, live)

        # Risk judges where the intent's bus copy came (its state is the bus's up to
        # there: a feed status that came in between counts), on the intent's clock.
        if not self._later(live.record if live is not None else None, judge):
            judge()

    def _judge(self, intent: Intent, live: LiveIntent | None) -> None:
        verdict = risk_decide(intent, self.risk, self.cfg, intent.created_wall_ns)
        cid = client_order_id(self.cfg.executor.client_id_prefix, intent.intent_id)
        if verdict.approved:
            risk_state.record_approval(self.risk, intent.symbol, cid, intent.side,
                                       verdict.price, verdict.quantity,
                                       intent.created_wall_ns)
        else:
            for reason in verdict.reasons:
                self.result.rejections[reason] += 1
        decided = live.decided_at if live is not None else None
        live_cid = live.cid if live is not None else ""
        if verdict.approved and live_cid:
            self.paired[cid] = live_cid

        def answer() -> None:
            gating.end_intent(self.host.gate, intent.symbol, intent.intent_id)
            if verdict.approved:
                self.host.approved(intent, cid, self._tick())
            else:
                gating.rejected(self.host.gate, intent.symbol,
                                max(intent.created_wall_ns,
                                    self.host.clock_of.get(intent.symbol, 0)),
                                self._backoff_ns)

        order = SimOrder(cid, intent.intent_id, intent.symbol, intent.side, verdict.price,
                         verdict.quantity, intent.created_wall_ns,
                         intent.created_wall_ns + int(intent.ttl_s * 1e9))
        if verdict.approved:
            # The executor lists it (PENDING) from now until the exchange answers.
            self._sent[cid] = order

        def place() -> None:
            del self._sent[cid]
            self._lock(order)
            self.result.orders.append(order)
            fills = self.matcher.submit(order, self.host.books.get(intent.symbol),
                                        self._clock)
            if fills:
                self._apply_fills(fills)

        if verdict.approved and not self._later(self.session.answered_at.get(live_cid), place):
            place()
        if not self._later(decided, answer):
            answer()

    def _live(self, intent: Intent) -> LiveIntent | None:
        """The session's intent this one stands for: same symbol, side and clock, not
        yet paired, made before now (a recorded intent comes on the bus after the book
        it was decided on)."""
        for live in self.session.by_decision.get(_key(intent), ()):
            if live.record not in self._claimed:
                self._claimed.add(live.record)
                return live
        return None

    def _act(self, out: Outcome) -> None:
        if out.failure is not None:
            f = out.failure
            self.result.plugin_errors.append(f"{f.symbol} {f.hook}: {f.error}")
        for cancel in out.cancels:
            cid = cancel.client_order_id

            def end(cid: str = cid) -> None:
                order = self.matcher.cancel(cid)
                if order is not None:
                    self._ended(order, "CANCELED")

            live_cid = self.paired.get(cid, "")
            if not self._later(self.session.ended_at.get(live_cid), end):
                end()
        for intent in out.intents:
            self._submit(intent)
