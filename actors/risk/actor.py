"""The risk actor: judges the strategy's intents, decides, forwards.

State comes only from the bus (``md.*``, ``order.*``, ``portfolio``, ``control``). The
decision itself is ``decision.decide`` (pure); this module does the I/O: every verdict
is published on ``decision.<SYMBOL>`` and counted, and approved orders go to the
executor by reliable request. A refused or unreachable executor turns the verdict into
a rejection with a reason, never a silent drop.

Every input is a recorded bus message (replay --verify depends on it, docs/recordings.md):
- an intent is judged where its copy comes on the bus (``intent.<SYMBOL>``, published by
  the strategy with its request), so the state it is judged on is the bus's up to that
  point, whatever the timing of the request; the request only carries the answer back.
  A request whose bus copy does not come within ``INTENT_WAIT_S`` (lost) is judged then;
- the executor's snapshots are applied as they come on ``portfolio``: risk asks for
  one (``SnapshotQuery(publish=True)``) at start, after a control and every
  ``snapshot_interval_s``, but never uses the reply's copy;
- an approval stays counted as an open order until an executor message (order event or
  snapshot) shows it, or for ``UNCONFIRMED_MAX_S`` of message clock: a snapshot
  published before the executor reserved it cannot contain it;
- input is taken from the actor's own first heartbeat that came back through the bus on
  (``Actor.deterministic_inputs``).

Clock: risk judges on the *message clock*, never on its own wall clock. The pure
decision runs at the intent's ``created_wall_ns`` (the envelope time of the book the
strategy decided on); the ``intent:expired`` check and every executor-state age compare
it with the latest envelope ``wall_ns`` risk has seen on ``md.*`` / ``portfolio``
(``message_clock``). So a replay of the same messages reproduces every verdict whatever
the time of the replay.

Why this is still fail closed live: marketdata republishes ``md.status`` every
``status_interval_s`` and ticks ``md.clock`` whether or not books arrive, and marks a
symbol stale once it has no data for ``max_data_age_s``; so while marketdata lives, the
message clock keeps moving with real time and a stale feed closes the data gate, an
intent that waited in a queue is expired, and a silent executor makes its snapshot stale
by that clock. The one case the message clock cannot see is marketdata itself falling
silent (dead, or the bus link lost): then no stale status comes either, so the actor
adds one wall-clock guard outside the pure decision: no ``md.*`` message received for
``max_data_age_s`` (local monotonic time) rejects with ``market_data:silent``. A replay
keeps md flowing, so it never trips there unless the recorded session had the same
silence.

``replay.verify`` (replay --verify's pipeline only): the intents judged are the
recorded ones (replayed on ``intent.``), decisions are published on
``verify.decision.<SYMBOL>`` for comparison, and no snapshot is asked for.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.risk import daybook
from actors.risk.decision import Verdict, decide
from actors.risk.gates import global_gates
from actors.risk.state import (
    RiskState,
    apply_book,
    apply_control,
    apply_feed_status,
    apply_order_event,
    apply_rules,
    apply_snapshot,
    forget_order,
    record_approval,
)
from actors.runtime import EXIT_CONFIG, Actor, FatalActorError, main_for
from bus.messages import (
    BookSnapshot,
    CancelOrder,
    CommandRequest,
    Control,
    FeedStatus,
    Intent,
    IntentAck,
    Msg,
    OrderAck,
    OrderEvent,
    OrderRequest,
    Packet,
    Ping,
    PortfolioSnapshot,
    RiskCommand,
    RiskDecision,
    RiskInfo,
    SnapshotQuery,
    SubmitIntent,
    SubmitOrder,
    SymbolRules,
)
from bus.transport import CommandError, RequestFailed
from bus.wiring import ClientLike
from shared.fsm import State
from shared.ids import client_order_id
from shared.tradingday import TradingDay

ACK_CACHE_SIZE = 10_000
INTENT_WAIT_S = 2.0  # a request waits this long for its intent's copy on the bus
UNCONFIRMED_MAX_S = 60.0  # message clock an approval no executor message showed counts


@dataclass
class _Answer:
    fut: asyncio.Future[IntentAck]
    judging: bool = False  # the intent is being (or was) judged for this slot


class RiskActor(Actor):
    name = "risk"
    subscriptions = ("md.", "order.", "portfolio", "intent.")
    deterministic_inputs = True
    serves_commands = True
    commands = RiskCommand

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = RiskState(trading_day=TradingDay.named(self.cfg.risk.day_boundary_tz,
                                                            self.cfg.risk.day_boundary_hour))
        self._daybook = daybook.path_in(self.cfg.data_path)
        self._saved_day = self._restore_day()
        self.acks: OrderedDict[str, IntentAck] = OrderedDict()  # approved intents
        # intent id -> its answer, from the judgement on the bus copy to the request
        # that takes it (whichever of the two comes first creates it)
        self.answers: OrderedDict[str, asyncio.Future[IntentAck]] = OrderedDict()
        # cid -> message clock of its approval, until an executor message shows it
        self.unconfirmed: dict[str, int] = {}
        self.clock_ns = 0  # latest envelope wall_ns seen on md.* / portfolio
        self.md_seen_mono: int | None = None  # local receipt of the latest md.* message
        self._verify = self.cfg.replay.verify
        self.exec_client: ClientLike | None = None
        self.snap_client: ClientLike | None = None
        self._refresh = asyncio.Event()
        # Always present in the heartbeat, also while zero.
        self.counters.update({"approved": 0, "rejected": 0, "resized": 0})

    # --- lifecycle -----------------------------------------------------------------
    async def setup(self) -> None:
        endpoint = self.cfg.command_endpoint("executor")
        rc = self.cfg.risk
        self.exec_client = self.request_client(endpoint, server="executor",
                                               timeout_s=rc.executor_timeout_s,
                                               retries=rc.executor_retries)
        self.snap_client = self.request_client(endpoint, server="executor", timeout_s=2.0,
                                               retries=0)
        self.fsm.to(State.DEGRADED_RECOVERY, "waiting for executor snapshot")
        if not self._verify:
            self.spawn(self._snapshot_loop(), "snapshot")
        self.spawn(self._fsm_loop(), "fsm")

    async def teardown(self) -> None:
        for client in (self.exec_client, self.snap_client):
            if client is not None:
                client.close()

    # --- state from the bus ------------------------------------------------------------
    async def on_message(self, topic: str, packet: Packet) -> None:
        body = packet.body
        if topic.startswith(("md.", "portfolio")):
            self._advance_clock(packet.env.wall_ns)
            if topic.startswith("md."):
                self.md_seen_mono = self.clock.mono_ns()
        match body:
            case BookSnapshot():
                apply_book(self.state, body)
            case FeedStatus():
                apply_feed_status(self.state, body)
            case SymbolRules():
                apply_rules(self.state, body)
            case OrderEvent():
                self.unconfirmed.pop(body.client_order_id, None)
                apply_order_event(self.state, body)
            case PortfolioSnapshot():
                self._apply_snapshot(body, packet.env.wall_ns)
            case Intent():
                self._take_intent(body)
            case _:
                self.counters["ignored_messages"] += 1

    async def on_control(self, control: Control) -> None:
        await super().on_control(control)
        apply_control(self.state, control)
        self._refresh.set()  # learn the executor's persisted latches at once
        self._update_fsm()

    # --- the message clock ---------------------------------------------------------------
    def _advance_clock(self, wall_ns: int) -> None:
        self.clock_ns = max(self.clock_ns, wall_ns)

    def message_clock(self) -> int:
        """The latest time the messages have shown us (0: none yet). Books and snapshots
        set directly into the state count too."""
        books = max((b.recv_wall_ns for b in self.state.books.values()), default=0)
        return max(self.clock_ns, books, self.state.snapshot_wall_ns)

    def _apply_snapshot(self, snap: PortfolioSnapshot, now_ns: int) -> None:
        """``now_ns``: the snapshot's envelope time (the message clock it stands for).
        Approvals no executor message has shown yet are kept (it cannot contain them),
        for at most UNCONFIRMED_MAX_S of message clock."""
        for o in snap.open_orders:
            self.unconfirmed.pop(o.client_order_id, None)
        horizon = self.message_clock() - int(UNCONFIRMED_MAX_S * 1e9)
        self.unconfirmed = {c: t for c, t in self.unconfirmed.items() if t >= horizon}
        apply_snapshot(self.state, snap, now_ns, self.cfg.risk.cash_asset,
                       frozenset(self.unconfirmed))
        self._save_day()
        self.counters["snapshots"] += 1
        self._update_fsm()

    # --- the daily-loss baseline across restarts (actors/risk/daybook.py) -----------------
    def _restore_day(self) -> daybook.DayBaseline | None:
        try:
            base = daybook.load(self._daybook, self.state.trading_day)
        except daybook.DayBookError as exc:
            raise FatalActorError(str(exc), EXIT_CONFIG) from None
        if base is not None:
            # Today's baseline (the first snapshot decides whether it is still today).
            self.state.day = base.day
            self.state.day_start_net = base.start_net
            self.state.day_start_marked = base.marked
            logger.info("risk: daily-loss baseline restored: day {} net {} (marked: {})",
                        base.day, base.start_net, base.marked)
        return base

    def _save_day(self) -> None:
        st = self.state
        now = daybook.DayBaseline(st.day, st.day_start_net, st.day_start_marked)
        if now == self._saved_day or st.day < 0:
            return
        try:
            daybook.save(self._daybook, st.trading_day, now)
        except OSError as exc:
            # Trading goes on (the loss is still counted); only a restart would forget
            # it, so say so loudly.
            self.counters["daybook_write_errors"] += 1
            logger.error("risk: cannot persist the daily-loss baseline to {}: {}; a restart "
                         "of risk now would count today's loss from the current PnL",
                         self._daybook, exc)
            return
        self._saved_day = now

    async def _snapshot_loop(self) -> None:
        """Asks the executor to publish a snapshot; the copy on the bus is the one
        applied (on_message), never the reply's."""
        backoff = 0.2
        while True:
            assert self.snap_client is not None
            try:
                await self.snap_client.request(SnapshotQuery(publish=True))
            except RequestFailed as exc:
                self.counters["snapshot_failures"] += 1
                logger.warning("risk: executor snapshot failed: {}", exc)
                self._update_fsm()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.risk.snapshot_interval_s)
                continue
            backoff = 0.2
            self._refresh.clear()
            # None applied yet: the published copy may have gone by before our input
            # opened (Actor.deterministic_inputs); ask again soon.
            wait = (self.cfg.risk.snapshot_interval_s if self.state.latches is not None
                    else 0.5)
            try:
                await asyncio.wait_for(self._refresh.wait(), wait)
            except TimeoutError:
                pass

    # --- FSM -------------------------------------------------------------------------
    async def _fsm_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._update_fsm()

    def _update_fsm(self) -> None:
        if self.fsm.state not in (State.READY, State.DEGRADED_RECOVERY, State.PAUSED_DATA,
                                  State.PAUSED_SAFETY):
            return
        gates = global_gates(self.cfg, self.state, self.message_clock())
        if any(g.startswith("gate:executor_state") for g in gates):
            target, why = State.DEGRADED_RECOVERY, "executor state unknown"
        elif gates:
            target, why = State.PAUSED_SAFETY, ",".join(gates)
        elif not any(self.state.feed.values()):
            target, why = State.PAUSED_DATA, "no fresh market data"
        else:
            target, why = State.READY, "gates open, data fresh"
        if target != self.fsm.state and self.fsm.can(target):
            self.fsm.to(target, why)

    # --- commands --------------------------------------------------------------------
    async def handle_command(self, request: CommandRequest[RiskCommand]) -> Msg | None:
        body = request.body
        if isinstance(body, SubmitIntent):
            return await self.on_intent(body.intent)
        if isinstance(body, CancelOrder):
            return await self._forward_cancel(body)
        if isinstance(body, Ping):
            return None
        raise CommandError(f"risk does not handle {type(body).__name__}")

    def _answer(self, intent_id: str, *, fresh: bool = False) -> _Answer:
        """The answer slot of ``intent_id``. ``fresh``: a new one, replacing a slot whose
        judgement no request took (a re-sent intent is judged anew)."""
        ans = self.answers.get(intent_id)
        if ans is None or (fresh and (ans.judging or ans.fut.done())):
            ans = _Answer(asyncio.get_running_loop().create_future())
            self.answers[intent_id] = ans
            self.answers.move_to_end(intent_id)
            while len(self.answers) > ACK_CACHE_SIZE:
                self.answers.popitem(last=False)
        return ans

    async def _forward_cancel(self, cancel: CancelOrder) -> Msg | None:
        """A strategy's cancel, passed on: only risk talks orders to the executor
        (bus/roles.py). A cancel only lowers exposure, so no gate holds it back."""
        assert self.exec_client is not None
        self.counters["cancels_forwarded"] += 1
        try:
            return await self.exec_client.request(cancel)
        except RequestFailed as exc:
            self.counters["cancel_failures"] += 1
            raise CommandError(f"executor: {exc}") from None

    async def on_intent(self, intent: Intent) -> IntentAck:
        """The strategy's request: its answer is the judgement made where the intent's
        copy came on the bus (``_take_intent``)."""
        cached = self.acks.get(intent.intent_id)
        if cached is not None:
            # The same decision again (a strategy retry or restart): same answer, and
            # no second order (counted where its copy comes on the bus).
            return cached
        ans = self._answer(intent.intent_id)
        if not ans.fut.done():
            try:
                await asyncio.wait_for(asyncio.shield(ans.fut), INTENT_WAIT_S)
            except TimeoutError:
                if not ans.judging:
                    self.counters["intent_not_on_bus"] += 1
                    logger.warning("risk: intent {} did not come on the bus within {} s; "
                                   "judged on the request", intent.intent_id, INTENT_WAIT_S)
                    self._take_intent(intent)
        ack = await ans.fut
        if self.answers.get(intent.intent_id) is ans:
            del self.answers[intent.intent_id]  # taken: a later re-send is judged anew
        return ack

    def _take_intent(self, intent: Intent) -> None:
        """Judge ``intent`` here, at its place in risk's input: the verdict, and an
        approval's effect on the state, are made now, synchronously; only the executor's
        answer to an approved order comes later."""
        ans = self._answer(intent.intent_id, fresh=True)
        cached = self.acks.get(intent.intent_id)
        if cached is not None:
            self.counters["duplicate_intents"] += 1
            ans.fut.set_result(cached)
            return
        ans.judging = True
        self.counters["intents"] += 1
        verdict = self._judge(intent)
        cid = client_order_id(self.cfg.executor.client_id_prefix, intent.intent_id)
        if not verdict.approved:
            ans.fut.set_result(self._decided(intent, verdict, cid, ""))
            return
        record_approval(self.state, intent.symbol, cid, intent.side, verdict.price,
                        verdict.quantity, intent.created_wall_ns)
        self.unconfirmed[cid] = self.message_clock()
        self.spawn(self._forward_then_decide(intent, verdict, cid, ans.fut),
                   f"forward-{intent.intent_id}")

    async def _forward_then_decide(self, intent: Intent, verdict: Verdict, cid: str,
                                   fut: asyncio.Future[IntentAck]) -> None:
        verdict, executor_status = await self._forward(intent, verdict, cid)
        ack = self._decided(intent, verdict, cid, executor_status)
        if verdict.approved:
            self.acks[intent.intent_id] = ack
            if len(self.acks) > ACK_CACHE_SIZE:
                self.acks.popitem(last=False)
        if not fut.done():
            fut.set_result(ack)

    def _decided(self, intent: Intent, verdict: Verdict, cid: str, status: str) -> IntentAck:
        self._publish_decision(intent, verdict, cid, status)
        return IntentAck(intent_id=intent.intent_id, verdict=verdict.verdict,  # type: ignore[arg-type]
                         reasons=verdict.reasons)

    def _judge(self, intent: Intent) -> Verdict:
        max_age_ns = int(self.cfg.marketdata.max_data_age_s * 1e9)
        # An intent older, by the message clock, than max_data_age was decided on data
        # that newer messages have replaced: stale now.
        if self.message_clock() - intent.created_wall_ns > max_age_ns:
            return Verdict("rejected", ["intent:expired"], intent.price, Decimal(0))
        # The wall-clock guard of the module doc: marketdata silent (no stale status
        # can come). None: nothing received yet, and then no FeedStatus either, so the
        # data gate is closed anyway.
        if (self.md_seen_mono is not None
                and self.clock.mono_ns() - self.md_seen_mono > max_age_ns):
            return Verdict("rejected", ["market_data:silent"], intent.price, Decimal(0))
        return decide(intent, self.state, self.cfg, intent.created_wall_ns)

    async def _forward(self, intent: Intent, verdict: Verdict, cid: str) -> tuple[Verdict, str]:
        assert self.exec_client is not None
        order = OrderRequest(
            intent_id=intent.intent_id, client_order_id=cid, symbol=intent.symbol,
            side=intent.side, order_type=intent.order_type, price=verdict.price,
            quantity=verdict.quantity, ttl_s=intent.ttl_s, reason=intent.reason,
            book_mono_ns=intent.book_mono_ns,
        )
        notional = verdict.price * verdict.quantity
        try:
            reply = await self.exec_client.request(SubmitOrder(order=order))
        except RequestFailed as exc:
            text = str(exc)
            if text.startswith("no reply from"):
                # Ambiguous: it may have arrived. Keep it counted as open; the next
                # snapshot tells.
                logger.error("risk: executor unreachable for {}: {}", cid, text)
                return self._rejected(verdict, "executor:unreachable"), f"unreachable: {text}"
            self.unconfirmed.pop(cid, None)
            forget_order(self.state, intent.symbol, cid, intent.side, notional)
            return self._rejected(verdict, "executor:refused"), f"refused: {text}"
        if not isinstance(reply, OrderAck):
            return self._rejected(verdict, "executor:bad_reply"), f"bad reply {reply!r}"[:200]
        status = f"{reply.status}:{reply.key_status}" + (f":{reply.reason}" if reply.reason else "")
        if reply.status == "accepted":
            return verdict, status
        if reply.status == "duplicate":
            return self._rejected(verdict, "executor:duplicate"), status
        self.unconfirmed.pop(cid, None)
        forget_order(self.state, intent.symbol, cid, intent.side, notional)
        return self._rejected(verdict, "executor:refused"), status

    @staticmethod
    def _rejected(verdict: Verdict, reason: str) -> Verdict:
        return Verdict("rejected", [*verdict.reasons, reason], verdict.price, verdict.quantity)

    def _publish_decision(self, intent: Intent, verdict: Verdict, cid: str, status: str) -> None:
        self.counters[verdict.verdict] += 1
        for reason in verdict.reasons:
            self.counters[f"reason.{reason}"] += 1
        decision = RiskDecision(
            intent_id=intent.intent_id, symbol=intent.symbol,
            verdict=verdict.verdict,  # type: ignore[arg-type]
            reasons=verdict.reasons, side=intent.side, order_type=intent.order_type,
            price=verdict.price, quantity=verdict.quantity,
            requested_quantity=intent.quantity,
            client_order_id=cid if verdict.approved or status else "",
            executor_status=status,
        )
        if self._verify:  # replay --verify compares it with the recorded one
            self.publish(decision, f"verify.decision.{intent.symbol}")
        else:
            self.publish(decision)
        if verdict.verdict == "rejected":
            logger.info("risk: rejected {} {} {}: {}", intent.symbol, intent.side,
                        intent.intent_id, ",".join(verdict.reasons))
        else:
            logger.info("risk: {} {} {} {}@{} -> {} ({})", verdict.verdict, intent.symbol,
                        intent.side, verdict.quantity, verdict.price, cid, status)

    def heartbeat_info(self) -> RiskInfo:
        gates = global_gates(self.cfg, self.state, self.message_clock())
        return RiskInfo(gates=list(gates),
                        fresh=[s for s, f in sorted(self.state.feed.items()) if f],
                        # the dashboard's daily-loss budget: risk's own count
                        daily_loss=self.state.daily_loss(),
                        day_start_net=self.state.day_start_net,
                        day=self.state.day, day_marked=self.state.day_start_marked,
                        max_daily_loss=self.cfg.risk.max_daily_loss_try)


def main() -> None:
    main_for(RiskActor)


if __name__ == "__main__":
    main()
