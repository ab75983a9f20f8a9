"""The risk actor: serves ``SubmitIntent`` from the strategy, decides, forwards.

State comes only from the bus (``md.*``, ``order.*``, ``portfolio``, ``control``) and
from executor snapshots (``SnapshotQuery`` at start and every ``snapshot_interval_s``).
The decision itself is ``decision.decide`` (pure); this module does the I/O: every
verdict is published on ``decision.<SYMBOL>`` and counted, and approved orders go to
the executor by reliable request. A refused or unreachable executor turns the verdict
into a rejection with a reason, never a silent drop.

Clock: risk judges on the *message clock*, never on its own wall clock. The pure
decision runs at the intent's ``created_wall_ns`` (the envelope time of the book the
strategy decided on); the ``intent:expired`` check and every executor-state age compare
it with the latest envelope ``wall_ns`` risk has seen on ``md.*`` / ``portfolio``
(``message_clock``), and an executor snapshot reply is stamped with that clock too. So
a replay of the same messages reproduces every verdict whatever the time of the replay.

Why this is still fail closed live: marketdata republishes ``md.status`` every
``status_interval_s`` whether or not books arrive, and marks a symbol stale once it has
no data for ``max_data_age_s``; so while marketdata lives, the message clock keeps
moving with real time and a stale feed closes the data gate, an intent that waited in
a queue is expired, and a silent executor makes its snapshot stale by that clock. The
one case the message clock cannot see is marketdata itself falling silent (dead, or the
bus link lost): then no stale status comes either, so the actor adds one wall-clock
guard outside the pure decision: no ``md.*`` message received for ``max_data_age_s``
(local monotonic time) rejects with ``market_data:silent``. A replay keeps md flowing,
so it never trips there unless the recorded session had the same silence.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
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
from bus.transport import CommandError, RequestClient, RequestFailed
from shared.fsm import State
from shared.ids import client_order_id
from shared.tradingday import TradingDay

ACK_CACHE_SIZE = 10_000


class RiskActor(Actor):
    name = "risk"
    subscriptions = ("md.", "order.", "portfolio")
    serves_commands = True
    commands = RiskCommand

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = RiskState(trading_day=TradingDay.named(self.cfg.risk.day_boundary_tz,
                                                            self.cfg.risk.day_boundary_hour))
        self._daybook = daybook.path_in(self.cfg.data_path)
        self._saved_day = self._restore_day()
        self.acks: OrderedDict[str, IntentAck] = OrderedDict()  # approved intents
        # cid -> (local mono ns, message clock ns) of its approval: kept across a snapshot
        # that cannot contain it yet.
        self.approved_at: dict[str, tuple[int, int]] = {}
        self.clock_ns = 0  # latest envelope wall_ns seen on md.* / portfolio
        self.md_seen_mono: int | None = None  # local receipt of the latest md.* message
        self._stamp_pending = False  # a snapshot arrived before any message clock
        self.exec_client: RequestClient | None = None
        self.snap_client: RequestClient | None = None
        self._refresh = asyncio.Event()
        # Always present in the heartbeat, also while zero.
        self.counters.update({"approved": 0, "rejected": 0, "resized": 0})

    # --- lifecycle -----------------------------------------------------------------
    async def setup(self) -> None:
        endpoint = self.cfg.command_endpoint("executor")
        rc = self.cfg.risk
        self.exec_client = RequestClient(self.ctx, endpoint, self.auth, server="executor",
                                         timeout_s=rc.executor_timeout_s,
                                         retries=rc.executor_retries)
        self.snap_client = RequestClient(self.ctx, endpoint, self.auth, server="executor",
                                         timeout_s=2.0, retries=0)
        self.fsm.to(State.DEGRADED_RECOVERY, "waiting for executor snapshot")
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
                self.md_seen_mono = time.monotonic_ns()
        match body:
            case BookSnapshot():
                apply_book(self.state, body)
            case FeedStatus():
                apply_feed_status(self.state, body)
            case SymbolRules():
                apply_rules(self.state, body)
            case OrderEvent():
                apply_order_event(self.state, body)
            case PortfolioSnapshot():
                # Kept: approvals made on a message clock at or after the snapshot was
                # published (it cannot contain them). The sender's clock, not our
                # receipt time: the same comparison in a replay.
                self._apply_snapshot(body, packet.env.wall_ns, since_clock=packet.env.wall_ns)
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
        if self._stamp_pending and self.clock_ns:
            # A snapshot learnt before any message had a time: it is as fresh as the
            # first message clock we see.
            self._stamp_pending = False
            self.state.snapshot_wall_ns = self.clock_ns

    def message_clock(self) -> int:
        """The latest time the messages have shown us (0: none yet). Books and snapshots
        set directly into the state count too."""
        books = max((b.recv_wall_ns for b in self.state.books.values()), default=0)
        return max(self.clock_ns, books, self.state.snapshot_wall_ns)

    def _apply_snapshot(self, snap: PortfolioSnapshot, now_ns: int, *, since_mono: int = -1,
                        since_clock: int = -1) -> None:
        """``now_ns``: the message clock the snapshot stands for. Approvals at or after
        ``since_mono`` (local) or ``since_clock`` (message clock) are kept."""
        keep = frozenset(c for c, (mono, clock) in self.approved_at.items()
                         if (since_mono >= 0 and mono >= since_mono)
                         or (since_clock >= 0 and clock >= since_clock))
        apply_snapshot(self.state, snap, now_ns, self.cfg.risk.cash_asset, keep)
        self._save_day()
        self._stamp_pending = now_ns == 0
        horizon = time.monotonic_ns() - 60 * 1_000_000_000
        self.approved_at = {c: t for c, t in self.approved_at.items() if t[0] >= horizon}
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
        backoff = 0.2
        while True:
            assert self.snap_client is not None
            started = time.monotonic_ns()
            try:
                reply = await self.snap_client.request(SnapshotQuery())
            except RequestFailed as exc:
                self.counters["snapshot_failures"] += 1
                logger.warning("risk: executor snapshot failed: {}", exc)
                self._update_fsm()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.risk.snapshot_interval_s)
                continue
            backoff = 0.2
            if isinstance(reply, PortfolioSnapshot):
                # Stamped with the message clock: its age is then judged against later
                # message clocks (fail closed while md flows; see the module doc).
                self._apply_snapshot(reply, self.message_clock(), since_mono=started)
            else:
                self.counters["snapshot_bad_reply"] += 1
            self._refresh.clear()
            try:
                await asyncio.wait_for(self._refresh.wait(), self.cfg.risk.snapshot_interval_s)
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
        self.counters["intents"] += 1
        cached = self.acks.get(intent.intent_id)
        if cached is not None:
            # The same decision again (a strategy retry or restart): same answer, and
            # no second order.
            self.counters["duplicate_intents"] += 1
            return cached
        verdict = self._judge(intent)
        cid = client_order_id(self.cfg.executor.client_id_prefix, intent.intent_id)
        executor_status = ""
        if verdict.approved:
            record_approval(self.state, intent.symbol, cid, intent.side, verdict.price,
                            verdict.quantity, intent.created_wall_ns)
            self.approved_at[cid] = (time.monotonic_ns(), intent.created_wall_ns)
            verdict, executor_status = await self._forward(intent, verdict, cid)
        self._publish_decision(intent, verdict, cid, executor_status)
        ack = IntentAck(intent_id=intent.intent_id, verdict=verdict.verdict,  # type: ignore[arg-type]
                        reasons=verdict.reasons)
        if verdict.approved:
            self.acks[intent.intent_id] = ack
            if len(self.acks) > ACK_CACHE_SIZE:
                self.acks.popitem(last=False)
        return ack

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
                and time.monotonic_ns() - self.md_seen_mono > max_age_ns):
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
            forget_order(self.state, intent.symbol, cid, intent.side, notional)
            return self._rejected(verdict, "executor:refused"), f"refused: {text}"
        if not isinstance(reply, OrderAck):
            return self._rejected(verdict, "executor:bad_reply"), f"bad reply {reply!r}"[:200]
        status = f"{reply.status}:{reply.key_status}" + (f":{reply.reason}" if reply.reason else "")
        if reply.status == "accepted":
            return verdict, status
        if reply.status == "duplicate":
            return self._rejected(verdict, "executor:duplicate"), status
        forget_order(self.state, intent.symbol, cid, intent.side, notional)
        return self._rejected(verdict, "executor:refused"), status

    @staticmethod
    def _rejected(verdict: Verdict, reason: str) -> Verdict:
        return Verdict("rejected", [*verdict.reasons, reason], verdict.price, verdict.quantity)

    def _publish_decision(self, intent: Intent, verdict: Verdict, cid: str, status: str) -> None:
        self.counters[verdict.verdict] += 1
        for reason in verdict.reasons:
            self.counters[f"reason.{reason}"] += 1
        self.publish(RiskDecision(
            intent_id=intent.intent_id, symbol=intent.symbol,
            verdict=verdict.verdict,  # type: ignore[arg-type]
            reasons=verdict.reasons, side=intent.side, order_type=intent.order_type,
            price=verdict.price, quantity=verdict.quantity,
            requested_quantity=intent.quantity,
            client_order_id=cid if verdict.approved or status else "",
            executor_status=status,
        ))
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
                        max_daily_loss=self.cfg.risk.max_daily_loss_try)


def main() -> None:
    main_for(RiskActor)


if __name__ == "__main__":
    main()
