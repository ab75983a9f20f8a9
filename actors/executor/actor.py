"""The executor actor: the only owner of the DB and of the authenticated venue client.
This module is wiring and dispatch only; each concern has its own module:

- orders.py: intake, gates at request and send time, the submit/cancel flow
- caps.py: hard caps checked before any reservation, whatever risk said (pure)
- probes.py: resolving keys of unknown outcome, startup recovery
- sync.py: following the venue (order and fill import, TTL cancels, balances, private
  events, dry-run fills) and reconcile
- snapshot.py: the portfolio snapshot, heartbeat info, housekeeping loops
- gates.py: gates and latches (the executor's DB is the one writer of latches)
- incidents.py: surprising venue data recorded (table + bus) and latched, never crashed on
- resolve.py: the operator's settlement of VANISHED orders (audited)
- venues/: where orders go (BTCTurk/simulator, dry-run, replay mirror), chosen once
- outage.py: exchange unreachable → halt, drift checks paused, reconcile, resume
- faults.py: test-only fault injection (BTCBOT_TEST_CRASH_AT), wired in at start
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import apsw
from loguru import logger

from actors.executor import dbmarker
from actors.executor.db import ExecutorDB, LockHeld, acquire_lock
from actors.executor.faults import CrashHook, Faults
from actors.executor.gates import Gates
from actors.executor.incidents import Incidents
from actors.executor.orders import Orders
from actors.executor.outage import Outage
from actors.executor.probes import Probes
from actors.executor.resolve import Resolver
from actors.executor.snapshot import Snapshots
from actors.executor.state import ExecState
from actors.executor.sync import Sync
from actors.executor.venues import make_venue
from actors.executor.venues.watched import WatchedVenue
from actors.runtime import EXIT_CONFIG, EXIT_LOCKED, Actor, FatalActorError, main_for
from bus.messages import (
    Ack,
    CancelOrder,
    CommandRequest,
    Control,
    ExecutorCommand,
    ExecutorInfo,
    Msg,
    Packet,
    Ping,
    ReconcileQuery,
    ResolveOrder,
    SetLatch,
    SnapshotQuery,
    SubmitOrder,
)
from bus.transport import CommandError
from shared import pending_latches
from shared.btcturk.http import HttpTransport
from shared.clock import Clock, LiveClock
from shared.config import Config
from shared.fsm import State

# A DB write that failed because of the disk (not of our data): ENOSPC, EIO.
DISK_ERRORS = (apsw.FullError, apsw.IOError)


class ExecutorActor(Actor):
    name = "executor"
    serves_commands = True
    commands = ExecutorCommand

    def __init__(self, cfg: Config, clock: Clock | None = None, *,
                 http: HttpTransport | None = None, faults: Faults | None = None,
                 ws_session: Any = None, **kwargs: Any) -> None:
        """``http``: the simulation's in-process exchange under the venue's real client
        (real sockets otherwise); ``ws_session``: the same for the private WebSocket (an
        aiohttp-like session whose ``ws_connect`` reaches it); ``faults``: the
        simulation's fault seam (the test hook from the environment otherwise);
        ``kwargs`` go to the runtime (its bus)."""
        self.db_path = cfg.path(cfg.executor.db_path)
        # The lock comes first: before the command socket is bound (binding unlinks the
        # ipc path, which would steal the running executor's endpoint).
        try:
            self._lock_fd = acquire_lock(self.db_path)
        except LockHeld as exc:
            raise FatalActorError(str(exc), EXIT_LOCKED) from None
        clock = clock or LiveClock()
        super().__init__(cfg, clock=clock, **kwargs)
        if cfg.executor.replay_mirror and cfg.mode != "dry-run":
            raise FatalActorError(
                f"executor.replay_mirror = true needs mode dry-run (mode is {cfg.mode}): "
                "it is only for replay --verify", EXIT_CONFIG)
        faults = faults or CrashHook.from_env()
        venue = make_venue(cfg, self.counters, clock, faults, http=http, ws_session=ws_session)
        self.subscriptions = venue.subscriptions  # type: ignore[misc]
        self.s = ExecState(cfg=cfg, venue=venue, clock=clock, faults=faults,
                           counters=self.counters, publish=self.publish,
                           spawn=self._spawn_guarded)
        self.gates = Gates(self.s, self.fsm)
        self.incidents = Incidents(self.s, self.gates)
        self.outage = Outage(self.s, self.gates, self.incidents)
        if venue.read_block is None:  # a venue that can be down: watch every call
            self.s.venue = WatchedVenue(venue, self.outage.ok,  # type: ignore[assignment]
                                        self.outage.unreachable)
        self.orders = Orders(self.s, self.gates, self.incidents)
        self.sync = Sync(self.s, self.gates, self.orders, self.incidents, self.outage)
        self.probes = Probes(self.s, self.gates, self.orders, self.sync.poll_once)
        self.resolver = Resolver(self.s, self.gates, self.orders, self.incidents)
        self.snapshots = Snapshots(self.s, self.gates)
        self.gates.on_change = self.snapshots.publish_now

    # --- lifecycle ---------------------------------------------------------------------
    async def setup(self) -> None:
        s = self.s
        try:
            remembered = dbmarker.check_before_open(self.db_path)
            s.db_or_none = ExecutorDB(self.db_path, synchronous=self.cfg.executor.db_synchronous,
                                      vfs=self.s.faults.db_vfs())
            dbmarker.check_after_open(self.db_path, remembered, s.db.db_id())
        except dbmarker.DbRefused as exc:
            raise FatalActorError(str(exc), EXIT_CONFIG) from None
        self._apply_pending_latches()
        self.gates.load()
        if not s.venue.follows:
            # Nothing to recover: nothing is ever sent, and no loop may publish.
            s.recovering = False
            logger.info("executor: venue {} (no exchange, no fills, no events)", s.venue.name)
            return
        self.probes.load()
        self.fsm.to(State.DEGRADED_RECOVERY, "startup recovery")
        # Guarded: a DB write that meets a full or failing disk in any of these halts
        # trading with reason "disk" and the executor stays up answering commands; an
        # unguarded loop would die, and with it the process, into a restart loop.
        self._spawn_guarded(self.probes.loop(), "probe")
        self._spawn_guarded(self.snapshots.publish_loop(), "portfolio")
        self._spawn_guarded(self.snapshots.prune_loop(), "prune")
        self._spawn_guarded(self.snapshots.checkpoint_loop(), "checkpoint")
        if self.gates.read_block() != "dry_run":
            self._spawn_guarded(self.sync.poll_loop(), "poll")
            self.sync.start_events()

    def _apply_pending_latches(self) -> None:
        """Latch requests the supervisor kept while this executor was unreachable come
        first, before recovery or any order (durable, then the file goes)."""
        path = pending_latches.path_in(self.cfg.data_path)
        try:
            items = pending_latches.load(path)
        except (OSError, ValueError) as exc:
            raise FatalActorError(f"cannot read pending latch requests {path}: {exc}; fix or "
                                  "remove the file (it holds latches an operator or the "
                                  "supervisor asked for)", EXIT_CONFIG) from None
        if not self.cfg.executor.replay_mirror:
            for item in items:
                self.s.db.set_latch(item.latch, item.value,
                                    f"{item.reason} (pending since {item.at:.0f})", item.at)
                logger.warning("executor: applied pending latch request {}={} ({})",
                               item.latch, item.value, item.reason)
            if items:
                path.unlink()

    async def teardown(self) -> None:
        await self.s.venue.close()
        if self.s.db_or_none is not None:
            db, self.s.db_or_none = self.s.db_or_none, None  # the final heartbeat must not
            db.close()  # touch a closed DB

    # --- disk faults -------------------------------------------------------------------
    def _disk_fault(self, exc: BaseException, where: str) -> None:
        """A DB write failed (ENOSPC, EIO): stop trading, say "disk", keep answering.
        Only a restart (after the disk is fixed) lifts it: what the failed write meant
        to record is re-learnt from the exchange by recovery."""
        self.counters["disk_errors"] += 1
        self.gates.halt("disk", f"DB write failed in {where}: {type(exc).__name__}: {exc}; "
                        f"fix the disk under {self.db_path.parent}, then restart the executor")

    def _spawn_guarded(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        async def guarded() -> None:
            try:
                await coro
            except DISK_ERRORS as exc:
                self._disk_fault(exc, name)
        return self.spawn(guarded(), name)

    # --- commands ----------------------------------------------------------------------
    async def handle_command(self, request: CommandRequest[ExecutorCommand]) -> Msg | None:
        try:
            return await self._dispatch(request)
        except DISK_ERRORS as exc:
            self._disk_fault(exc, type(request.body).__name__)
            raise CommandError(f"disk: {exc}") from None

    async def _dispatch(self, request: CommandRequest[ExecutorCommand]) -> Msg | None:
        body = request.body
        match body:
            case SubmitOrder(order=order):
                return await self.orders.submit(order)
            case SnapshotQuery(publish=publish):
                return await self.snapshots.answer(publish)
            case Ping():
                return None
        if not self.s.venue.follows:
            raise CommandError(f"executor ({self.s.venue.name} venue) does not handle "
                               f"{type(body).__name__}")
        match body:
            case CancelOrder():
                return self.orders.cancel(body.client_order_id, body.reason or "requested")
            case ReconcileQuery(symbol=symbol):
                return await self.sync.reconcile(symbol)
            case SetLatch():
                return self._on_set_latch(body.latch, body.value, body.reason)
            case ResolveOrder():
                return self.resolver.resolve(body)
        raise CommandError(f"executor does not handle {type(body).__name__}")

    def _on_set_latch(self, latch: str, value: bool, reason: str) -> Ack:
        """The one writer of the latches: durable first, then announced."""
        self.gates.set_latch(latch, value, reason)
        return Ack(detail=f"{latch}={'on' if value else 'off'}")

    async def on_control(self, control: Control) -> None:
        """Broadcast controls. Latch changes are not taken from the bus (one writer: a
        change is a SetLatch request to this executor); only shutdown is obeyed."""
        if control.command == "shutdown":
            self.stop()

    async def on_message(self, topic: str, packet: Packet) -> None:
        try:
            self.sync.on_bus(packet.body)
        except DISK_ERRORS as exc:
            self._disk_fault(exc, f"message {topic}")

    # --- observability -----------------------------------------------------------------
    def heartbeat_counters(self) -> dict[str, int]:
        return self.snapshots.heartbeat_counters()

    def heartbeat_info(self) -> ExecutorInfo:
        return self.snapshots.heartbeat_info(str(self.db_path))


def main() -> None:
    main_for(ExecutorActor)


if __name__ == "__main__":
    main()
