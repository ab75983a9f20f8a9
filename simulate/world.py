"""One simulated run: the actors, the bus, the exchange and the faults of one seed.

Everything random comes from ``World.rng`` (one ``random.Random(seed)``; Python's global
``random``, used by the REST client's retry jitter, is seeded from it too), time is the
virtual loop's, and the actors are the production classes (marketdata, strategy, risk,
executor with its apsw DB in a temporary directory, reconciler) on the in-memory bus. The
supervisor's part is played by its pure pieces: ``RestartTracker`` decides restarts and
``derive_trading_state`` the trading state the invariants check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from loguru import logger

from actors.executor.actor import ExecutorActor
from actors.executor.faults import DiskFaultVFS, Faults
from actors.marketdata.actor import MarketdataActor
from actors.reconciler.actor import ReconcilerActor
from actors.risk.actor import RiskActor
from actors.runtime import Actor
from actors.strategy.actor import StrategyActor
from actors.supervisor.policy import RestartTracker
from bus.messages import ResolveOrder, SetLatch
from bus.roles import OPERATOR, SUPERVISOR
from bus.transport import RequestFailed
from shared.btcturk.client import BtcTurkClient
from shared.config import Config, load_config, to_toml
from simulate.clock import EPOCH_NS, VirtualClock
from simulate.exchange import InProcessExchange
from simulate.invariants import Invariants, Violation
from simulate.membus import MemBus, MemClient, Network
from simulate.profiles import (  # noqa: F401 - FAULT_KINDS, MD_SOURCES, TRADING: re-exported
    EVENT_FAULTS,
    FAULT_KINDS,
    MD_SOURCES,
    PROFILES,
    RATE_FAULTS,
    TRADING,
    Profile,
)
from simulate.trace import Trace
from simulate.vloop import SimulationStalled, VirtualTimeLoop

ACTORS = ("executor", "marketdata", "risk", "strategy", "reconciler")
DRAWN_NEVER = -1.0  # a per-message rate switched off: drawn, never below it
DISK_HALT = "disk"  # the executor's halt name for a failed DB write (executor/actor.py)
# After the faults stop: the operator sets the kill switch (no new orders), the market
# moves on for SETTLE_S - QUIET_S (resting orders still fill, the executor follows), then
# stands still for QUIET_S (no fill can land between the executor's last poll and the
# check), and the end-of-run checks run.
SETTLE_S = 180.0
QUIET_S = 60.0
RESOLVE_EVERY_S = 300.0
CHECK_EVERY_S = 1.0
START_BALANCES = {"TRY": Decimal("100000"), "BTC": Decimal("0"), "ETH": Decimal("0"),
                  "SOL": Decimal("0")}

# The simulated deployment: paper mode, the default three symbols, marketdata on the
# public WebSocket with REST fallback (the production default; ``--md-source rest``: REST
# polling only), the executor following orders on its private WebSocket and REST (both
# sockets: simulate/wsock.py), no recorder. Everything else is the configuration's
# defaults.
BASE_CONFIG: dict[str, Any] = {
    "mode": "paper", "runtime_dir": "run", "log_dir": "logs", "data_dir": "data",
    "exchange": {"rest_url": "http://exchange.sim.invalid",
                 "ws_url": "ws://exchange.sim.invalid/ws"},
    "marketdata": {"symbols": ["BTCTRY", "ETHTRY", "SOLTRY"], "source": "ws"},
    "executor": {"db_synchronous": "NORMAL"},
    "recorder": {"required": False},
}
# ``--trading busy``: bench/chaos.py's aggressive settings (sell the whole position right
# after each buy, small cooldown, several open orders, short data-age limit and settle
# window), so faults meet many more orders in flight.
BUSY: dict[str, Any] = {
    "strategy": {"throttle_ms": 100, "entry_notional_try": "150", "min_profit_bps": -100,
                 "take_profit_fraction": "1", "reject_backoff_s": 0.5,
                 "snapshot_interval_s": 1.0},
    "risk": {"cooldown_s": 0.3, "max_open_orders_per_symbol": 3, "max_orders_per_minute": 600,
             "max_position_try_per_symbol": "100000", "max_daily_loss_try": "100000",
             "snapshot_interval_s": 1.0},
    "executor": {"settle_window_s": 3.0, "order_poll_interval_s": 0.5,
                 "stale_order_ttl_s": 5.0, "balance_refresh_s": 1.0,
                 "probe_backoff_max_s": 2.0},
    # A WS book older than 1.5 s falls back to REST, within the 3 s data-age limit.
    "marketdata": {"max_data_age_s": 3.0, "rest_poll_interval_s": 0.5, "ws_stale_s": 1.5},
    "reconciler": {"interval_s": 5.0},
}


def config_doc(trading: str, md_source: str = "ws") -> dict[str, Any]:
    if trading not in TRADING:
        raise ValueError(f"unknown trading {trading!r} (known: {', '.join(TRADING)})")
    if md_source not in MD_SOURCES:
        raise ValueError(f"unknown marketdata source {md_source!r} (known: "
                         f"{', '.join(MD_SOURCES)})")
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE_CONFIG.items()}
    if trading == "busy":
        for section, values in BUSY.items():
            doc[section] = {**doc.get(section, {}), **values}
    doc["marketdata"]["source"] = md_source
    return doc



@dataclass
class RunResult:
    seed: int
    hours: float
    faults: str
    plant: str
    trace_hash: str = ""
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    orders: int = 0
    fills: int = 0
    faults_injected: int = 0
    restarts: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    fault_counts: dict[str, int] = field(default_factory=dict)
    trading_seconds: int = 0
    events: int = 0
    bus_refused: int = 0  # publishes the roles would have the proxy drop (0 expected)
    md_source: str = "ws"
    # marketdata's own counters (its runtime's and its WebSocket's, ``ws_`` prefixed),
    # summed over its incarnations: which path ran and how it coped
    marketdata: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "hours": self.hours, "faults": self.faults, "plant": self.plant,
            "trace_hash": self.trace_hash, "sim_seconds": round(self.sim_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3), "orders": self.orders,
            "fills": self.fills, "faults_injected": self.faults_injected,
            "restarts": self.restarts, "violations": self.violations,
            "fault_counts": dict(sorted(self.fault_counts.items())),
            "trading_seconds": self.trading_seconds, "events": self.events,
            "bus_refused": self.bus_refused, "md_source": self.md_source,
            "marketdata": dict(sorted(self.marketdata.items())),
        }


class SimFaults(Faults):
    """The executor's fault seam in simulation: its DB opened through the disk-fault VFS
    whose trigger file the world writes while the disk is 'full'."""

    def __init__(self, trigger: Path) -> None:
        self.db_trigger = str(trigger)

    def db_vfs(self) -> str | None:
        name = DiskFaultVFS.register(str(self.db_trigger))
        # One VFS per process, registered by the first world: point it at this one's
        # trigger (a file opened through it keeps the trigger it was opened with).
        assert DiskFaultVFS._registered is not None
        DiskFaultVFS._registered.trigger = str(self.db_trigger)
        return name


@dataclass
class Slot:
    """One supervised actor: its current incarnation and the restart policy's state."""

    name: str
    tracker: RestartTracker
    actor: Actor | None = None
    task: asyncio.Task[int] | None = None
    clock: VirtualClock | None = None
    started_at: float = 0.0
    incarnations: int = 0
    crashed: bool = False
    gave_up: bool = False


class World:
    def __init__(self, seed: int, hours: float, profile: Profile | str = "default",
                 plant: str = "", workdir: Path | None = None,
                 without: tuple[str, ...] = (), trading: str = "default",
                 md_source: str = "ws") -> None:
        self.seed = seed
        self.hours = hours
        unknown = set(without) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)} (known: "
                             f"{', '.join(FAULT_KINDS)})")
        base = PROFILES[profile] if isinstance(profile, str) else profile
        # A fault switched off keeps drawing its random numbers (its rate DRAWN_NEVER, its
        # events chosen but not acted on), so the rest of the schedule stays in place: the
        # shrinker's smaller schedule is the same run without that one kind.
        self.without = frozenset(without)
        self.profile = dataclasses.replace(
            base, **{k: DRAWN_NEVER for k in without if k in RATE_FAULTS
                     and getattr(base, k) > 0})
        self.plant = plant
        self.rng = random.Random(seed)
        self.loop = VirtualTimeLoop()
        self.trace = Trace(self.loop.time)
        self.net = Network(self.loop, self.rng, self.trace)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(
            prefix=f"btcbot-sim-{seed}-", dir=_fast_tmp())
        self.dir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.trace.mask = str(self.dir).encode()
        (self.dir / "supervisor.toml").write_text(to_toml(config_doc(trading, md_source)))
        self.cfg: Config = load_config(self.dir / "supervisor.toml", mode="paper")
        self.disk_trigger = self.dir / "disk-fault"
        base = self.rng.getrandbits(32)
        self.start_balances = dict(START_BALANCES)
        self.exchange = InProcessExchange(
            self.loop, self.rng, self.trace, symbols=list(self.cfg.marketdata.symbols),
            balances=dict(self.start_balances), wall_ms=self._wall_ms, market_seed=base,
            state_path=self.dir / "exchange" / "state.db",
            credentials=dict([self.cfg.credentials()]))
        self.slots = {n: Slot(n, RestartTracker(self.cfg.actor_settings(n), self.cfg.supervisor))
                      for n in ACTORS}
        self.result = RunResult(seed, hours, self.profile.name, plant, md_source=md_source)
        self.inv = Invariants(self)
        self.net.on_boundary = self._crash_at_boundary
        self.exchange.ws.on_fault = self.fault
        self.faulting = True
        self.stopping = False
        # The operator's latch requests reach the executor through the supervisor (whose
        # identity the roles allow SetLatch on the executor).
        self.operator = MemClient(self.net, self.cfg.command_endpoint("executor"), SUPERVISOR,
                                  timeout_s=2.0, retries=2)
        # The operator's own console: settles VANISHED orders (`orders resolve`).
        self.console = MemClient(self.net, self.cfg.command_endpoint("executor"), OPERATOR,
                                 timeout_s=2.0, retries=2)
        self._bg: set[asyncio.Task[Any]] = set()
        self._main_task: asyncio.Task[Any] | None = None
        self._operator_tasks: set[asyncio.Task[Any]] = set()
        self.market_still = False
        self._stalled = False

    def _wall_ms(self) -> int:
        return (EPOCH_NS + int(self.loop.time() * 1e9)) // 1_000_000

    def fault(self, kind: str, detail: str = "") -> None:
        self.result.faults_injected += 1
        self.result.fault_counts[kind] = self.result.fault_counts.get(kind, 0) + 1
        self.trace.note("fault", kind, detail)

    # --- actors ------------------------------------------------------------------------
    def _make(self, name: str, bus: MemBus, clock: VirtualClock) -> Actor:
        cfg = self.cfg
        if name == "executor":
            return ExecutorActor(cfg, clock, http=self.exchange.transport("executor"),
                                 ws_session=self.exchange.ws_session("executor"),
                                 bus=bus, faults=SimFaults(self.disk_trigger))
        if name == "marketdata":
            client = BtcTurkClient(cfg.rest_url, timeout_s=cfg.exchange.timeout_s,
                                   http=self.exchange.transport("marketdata"))
            return MarketdataActor(cfg, clock=clock, bus=bus, rest_client=client,
                                   ws_session=self.exchange.ws_session("marketdata"))
        cls: type[Actor] = {"risk": RiskActor, "strategy": StrategyActor,
                            "reconciler": ReconcilerActor}[name]
        return cls(cfg, clock=clock, bus=bus)

    def start(self, name: str) -> None:
        slot = self.slots[name]
        slot.incarnations += 1
        incarnation = f"{name}-{slot.incarnations}"
        clock = VirtualClock(self.loop, mono_base_ns=self.rng.getrandbits(40))
        bus = MemBus(self.net, name, incarnation)
        slot.clock, slot.crashed = clock, False
        slot.actor = self._make(name, bus, clock)
        slot.started_at = self.loop.time()
        slot.task = self.loop.create_task(slot.actor.run(), name=f"actor-{incarnation}")
        slot.task.add_done_callback(lambda t, s=slot: self._exited(s, t))
        self.trace.note("start", name, incarnation)

    def crash(self, name: str, why: str) -> bool:
        """Kill ``name`` as SIGKILL would: its endpoints die first (nothing more leaves or
        arrives), then its tasks; only what it made durable survives."""
        slot = self.slots[name]
        if slot.actor is None or slot.crashed or self.stopping:
            return False
        slot.crashed = True
        self.fault("crash", f"{name}: {why}")
        slot.actor.bus.close()
        lock_fd = getattr(slot.actor, "_lock_fd", None)
        assert slot.task is not None
        slot.task.cancel()
        if lock_fd is not None:
            # The kernel drops a dead process's flock; ours lives on in this process.
            self.loop.call_soon(_close_fd, lock_fd)
        return True

    def _crash_at_boundary(self, actor: str) -> bool:
        return self.faulting and actor in self.slots and self.crash(actor, "message boundary")

    def _exited(self, slot: Slot, task: asyncio.Task[int]) -> None:
        code = None if task.cancelled() else task.result()
        if slot.name == "marketdata" and slot.actor is not None:
            md = self.result.marketdata
            counts = {**slot.actor.counters, **slot.actor.heartbeat_counters()}
            for k, v in counts.items():
                md[k] = md.get(k, 0) + v
        if slot.actor is not None and not slot.crashed:
            # Exited by itself (fatal error, lost parent): the endpoints go with it.
            slot.actor.bus.close()
            lock_fd = getattr(slot.actor, "_lock_fd", None)
            if lock_fd is not None:
                _close_fd(lock_fd)
        slot.actor = None
        if self.stopping:
            return
        self.trace.note("exit", slot.name, str(code))
        now = self.loop.time()
        tr = slot.tracker
        if not tr.should_restart(code if not slot.crashed else None, stopping=False):
            return
        tr.record_exit(now - slot.started_at, now)
        if tr.over_intensity(now):
            tr.gave_up = slot.gave_up = True
            self.trace.note("gave_up", slot.name, "")
            return
        delay = tr.backoff_s()
        tr.note_restart(now + delay)
        self.result.restarts += 1
        self.loop.call_later(delay, self.start, slot.name)

    # --- the run -------------------------------------------------------------------------
    def run(self) -> RunResult:
        wall = time.perf_counter()
        random.seed(self.rng.getrandbits(64))  # the REST client's retry jitter
        logger.disable("")
        try:
            self.loop.run_until_complete(self._main())
        except SimulationStalled as exc:
            # A deadlock or livelock of the simulated system is a failure like any other:
            # reported with its reproducer, not a crash of the simulator.
            self.inv.record(Violation("no_stall", str(exc)))
            # The spinning task cannot be stopped: the loop is abandoned, and its pending
            # tasks with it (their "destroyed but pending" notes would only be noise).
            self.loop.set_exception_handler(lambda _loop, _ctx: None)
            self._stalled = True
        finally:
            logger.enable("")
            self._close()
        r = self.result
        r.wall_seconds = time.perf_counter() - wall
        r.sim_seconds = self.loop.time()
        r.trace_hash = self.trace.hexdigest()
        r.events = self.trace.events
        r.bus_refused = self.net.refused
        return r

    def abort(self) -> None:
        """A violation: stop the run now (the end-of-run checks are skipped)."""
        if self._main_task is not None and not self._main_task.done():
            self._main_task.cancel()

    async def _main(self) -> None:
        self._main_task = asyncio.current_task()
        for name in ACTORS:
            self.start(name)
        self._spawn(self._market())
        self._spawn(self._checks())
        self._spawn(self._operator_resolves())
        if self.profile.name != "none":
            self._apply_rates(self.profile)
            self._spawn(self._fault_events())
        try:
            await self._timeline()
        except asyncio.CancelledError:
            if not self.result.violations:
                raise
        await self._stop_all()

    async def _timeline(self) -> None:
        try:
            await asyncio.sleep(self.hours * 3600)
            self.faulting = False
            self._apply_rates(PROFILES["none"])
            await self._settle()
            await asyncio.sleep(SETTLE_S - QUIET_S)
            self.market_still = True
            await asyncio.sleep(QUIET_S)
            self.inv.final()
        except Violation as v:
            self.inv.record(v)

    async def _settle(self) -> None:
        """The end of the faults: what a careful operator does next. Every actor runs, the
        disk has room, latches are cleared, the exchange is healthy."""
        for task in list(self._operator_tasks):
            task.cancel()  # the operator's own latch pulses end here
        self._spawn(self._set_latch("kill_switch", True))
        self.disk_trigger.unlink(missing_ok=True)
        self._venue_restart()
        self.exchange.faults.outage_until = 0.0
        self.exchange.faults.frozen_until.clear()
        self.exchange.ws.faults.public_frozen_until.clear()
        self.exchange.faults.trades_lag_until = 0.0
        for slot in self.slots.values():
            if slot.clock is not None:
                slot.clock.skew_ns = 0
            if slot.gave_up or slot.actor is None:
                slot.gave_up = slot.tracker.gave_up = False
                if slot.actor is None:
                    self.start(slot.name)
        self._restart_if_disk_halted()

    async def _stop_all(self) -> None:
        self.stopping = True
        for task in [*self._bg, *self._operator_tasks]:
            task.cancel()
        for slot in self.slots.values():
            if slot.actor is not None:
                slot.actor.stop()
        tasks = [s.task for s in self.slots.values() if s.task is not None]
        await asyncio.gather(*tasks, *self._bg, *self._operator_tasks, return_exceptions=True)

    def _close(self) -> None:
        for slot in self.slots.values():
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        try:
            if not self._stalled:
                self.loop.run_until_complete(asyncio.sleep(0))
        finally:
            if not self._stalled:
                # Left open after a stall: the abandoned tasks' coroutines are finalized
                # later by the collector, which needs a loop that is not closed.
                self.loop.close()
            self.exchange.close()
            if self._tmp is not None:
                self._tmp.cleanup()

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg_done)

    def _bg_done(self, task: asyncio.Task[Any]) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.stopping:
            raise task.exception()  # type: ignore[misc]

    async def _market(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not self.market_still:
                self.exchange.tick()

    async def _checks(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                self.inv.periodic()
            except Violation as v:
                self.inv.record(v)
                self.abort()
                return

    # --- faults --------------------------------------------------------------------------
    def _apply_rates(self, p: Profile) -> None:
        nf = self.net.faults
        nf.pubsub_loss, nf.req_loss, nf.reply_loss = p.pubsub_loss, p.req_loss, p.reply_loss
        nf.reply_late, nf.crash_at_boundary = p.reply_late, p.crash_at_boundary
        xf = self.exchange.faults
        xf.connect_refused, xf.timeout, xf.server_error = p.connect_refused, p.timeout, \
            p.server_error
        xf.rate_limited, xf.drop_after_accept = p.rate_limited, p.drop_after_accept
        xf.repeat_trade = p.repeat_trade
        wf = self.exchange.ws.faults
        wf.private_repeat, wf.private_late = p.private_repeat, p.private_late

    async def _fault_events(self) -> None:
        p = self.profile
        kinds: list[tuple[str, Callable[[bool], Any]]] = [
            ("outages", self._outage), ("frozen_books", self._freeze),
            ("late_fills", self._late_fills), ("vanishing_orders", self._vanish),
            ("clock_skews", self._skew), ("full_disks", self._disk),
            ("kill_switch", lambda live: self._latch("kill_switch", live)),
            ("pauses", lambda live: self._latch("paused", live)),
            ("venue_crashes", self._venue_crash),
            ("ws_drops", lambda live: self._ws_drop("executor", live)),
            ("public_ws_drops", lambda live: self._ws_drop("marketdata", live)),
            ("public_ws_freezes", self._public_freeze),
        ]
        rates = [(name, getattr(p, name), act) for name, act in kinds]
        total = sum(rate for _, rate, _ in rates)
        if total <= 0:
            return
        while self.faulting:
            await asyncio.sleep(self.rng.expovariate(total / 3600.0))
            if not self.faulting:
                return
            pick = self.rng.uniform(0, total)
            for name, rate, act in rates:
                if pick < rate:
                    # A kind switched off still draws its parameters (see __init__).
                    act(name not in self.without)
                    break
                pick -= rate

    def _outage(self, live: bool) -> None:
        d = self.rng.uniform(10, 60)
        if live:
            self.exchange.faults.outage_until = self.loop.time() + d
            self.fault("outage", f"{d:.0f}s")

    def _freeze(self, live: bool) -> None:
        symbol = self.rng.choice(sorted(self.exchange.market.books))
        d = self.rng.uniform(10, 90)
        if live:
            self.exchange.faults.frozen_until[symbol] = self.loop.time() + d
            self.fault("frozen_book", f"{symbol} {d:.0f}s")

    def _late_fills(self, live: bool) -> None:
        lag, hold = self.rng.uniform(5, 30), self.rng.uniform(30, 120)
        if live:
            xf = self.exchange.faults
            xf.trades_lag_s, xf.trades_lag_until = lag, self.loop.time() + hold
            self.fault("late_fills", f"{lag:.0f}s")

    def _vanish(self, live: bool) -> None:
        engine = self.exchange.engine
        open_ = [o for o in engine.orders.values() if o.is_open]
        if not open_:
            return
        order = self.rng.choice(open_)
        if live:
            engine.forget(order.client_id)
            self.exchange.persist()
            self.inv.vanished.add(order.client_id)
            self.fault("vanish", order.client_id)

    def _venue_crash(self, live: bool) -> None:
        down = self.rng.uniform(5, 30)
        if live and not self.exchange.down:
            self.exchange.crash()
            self.fault("venue_crash", f"down {down:.0f}s")
            self.loop.call_later(down, self._venue_restart)

    def _ws_drop(self, who: str, live: bool) -> None:
        """The exchange drops ``who``'s connection (the executor's private socket, or
        marketdata's public one): its newest, if it has one open."""
        conns = [c for c in self.exchange.ws.conns if c.who == who]
        if live and conns:
            conns[-1].close("dropped (fault)")
            self.fault("ws_drop" if who == "executor" else "public_ws_drop", who)

    def _public_freeze(self, live: bool) -> None:
        """One pair's public frames stop (the exchange's publisher for it stuck) while
        the market moves on, REST shows it and the socket stays up (other pairs flow)."""
        symbol = self.rng.choice(sorted(self.exchange.market.books))
        d = self.rng.uniform(10, 90)
        if live:
            self.exchange.ws.faults.public_frozen_until[symbol] = self.loop.time() + d
            self.fault("public_ws_freeze", f"{symbol} {d:.0f}s")

    def _venue_restart(self) -> None:
        if self.exchange.down:
            self.exchange.restart()
            self.inv.versions.restarted()  # the walk continues from its last save
            self.trace.note("start", "venue", f"generation {self.exchange.generation}")

    def _skew(self, live: bool) -> None:
        name = self.rng.choice(ACTORS)
        skew = int(self.rng.uniform(-2.0, 2.0) * 1e9)
        hold = self.rng.uniform(30, 300)
        clock = self.slots[name].clock
        if live and clock is not None:
            clock.skew_ns = skew
            self.loop.call_later(hold, _unskew, clock)
            self.fault("clock_skew", f"{name} {skew / 1e9:+.3f}s")

    def _disk(self, live: bool) -> None:
        d = self.rng.uniform(10, 60)
        if live:
            self.disk_trigger.write_text("enospc")
            self.fault("full_disk", f"{d:.0f}s")
            self.loop.call_later(d, self._disk_fixed)

    def _disk_fixed(self) -> None:
        self.disk_trigger.unlink(missing_ok=True)
        if self.faulting:
            self._restart_if_disk_halted()

    def _restart_if_disk_halted(self) -> None:
        """Only a restart lifts the executor's disk halt (docs/executor.md): the operator
        restarts it (a graceful stop; the restart policy starts it again)."""
        ex = self.slots["executor"].actor
        if ex is not None and DISK_HALT in ex.gates.halts:  # type: ignore[attr-defined]
            self.trace.note("operator", "executor", "restart after the disk was fixed")
            ex.stop()

    def _latch(self, latch: str, live: bool) -> None:
        hold = self.rng.uniform(30, 300)
        if live:
            self.fault(latch, "on")
            task = self.loop.create_task(self._operator_latch(latch, hold))
            self._operator_tasks.add(task)
            task.add_done_callback(self._operator_tasks.discard)

    async def _operator_resolves(self) -> None:
        """An operator who reads status every few minutes settles each VANISHED order
        with `orders resolve ... --as cancelled`: the truth here (a vanished order is
        gone with its reserved funds released, never filled)."""
        while True:
            await asyncio.sleep(RESOLVE_EVERY_S)
            for (cid,) in self.inv.rows("SELECT client_order_id FROM orders WHERE "
                                        "state='VANISHED' ORDER BY client_order_id"):
                self.trace.note("operator", "resolve", cid)
                try:
                    await self.console.request(ResolveOrder(
                        client_order_id=cid, resolution="cancelled",
                        reason="simulated operator: gone at the exchange", operator="sim"))
                except RequestFailed:
                    pass  # the next round tries again

    async def _operator_latch(self, latch: str, hold_s: float) -> None:
        await self._set_latch(latch, True)
        await asyncio.sleep(hold_s)
        await self._set_latch(latch, False)

    async def _set_latch(self, latch: str, value: bool) -> None:
        for _ in range(30):  # the operator insists until the executor answers
            try:
                await self.operator.request(SetLatch(latch=latch, value=value,  # type: ignore[arg-type]
                                                     reason="simulated operator"))
                return
            except RequestFailed:
                await asyncio.sleep(2.0)


def _unskew(clock: VirtualClock) -> None:
    clock.skew_ns = 0


def _close_fd(fd: int) -> None:
    import os
    try:
        os.close(fd)
    except OSError:
        pass


def _fast_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None
