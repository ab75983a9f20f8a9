"""The supervisor: starts children in order, watches exits and heartbeats,
restarts by policy with backoff and an intensity limit, answers the CLI on its
control socket, and stops everything (no orphan survives it)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp
import zmq
import zmq.asyncio
from loguru import logger

from actors.supervisor.child import Child
from actors.supervisor.env import child_environment, ignored_live_credentials
from actors.supervisor.healthwatch import HealthListener
from actors.supervisor.policy import RestartTracker
from actors.supervisor.status import build_status
from actors.supervisor.symbols import check_symbols, judge
from bus.auth import BusAuth, KeysError, ensure_keys, keys_dir_of
from bus.health import BusHealth
from bus.messages import (
    Ack,
    CommandRequest,
    FeedStatus,
    Heartbeat,
    Msg,
    PortfolioSnapshot,
    ReconcileReport,
    SetLatch,
    SnapshotQuery,
    StateTransition,
    StatusReply,
    SupervisorChannel,
    SupervisorCommand,
)
from bus.roles import ACTORS, IDENTITIES, OPERATOR, SUPERVISOR
from bus.transport import (
    CommandError,
    Publisher,
    RequestClient,
    RequestFailed,
    RequestServer,
    Subscriber,
    new_incarnation,
)
from shared import pending_latches, sdnotify
from shared.actorspec import spec as actor_spec
from shared.config import Config
from shared.files import ensure_private_dir

MONITOR_INTERVAL_S = 0.1  # exits and deadlines; also bounds restart latency


class AlreadyRunning(Exception):
    pass


def ensure_runtime_dir(cfg: Config) -> Path:
    return ensure_private_dir(cfg.runtime_path)  # ipc sockets live here: owner only


class InstanceLock:
    """One supervisor per runtime dir: an flock held for the process lifetime."""

    def __init__(self, cfg: Config) -> None:
        self.path = ensure_runtime_dir(cfg) / "supervisor.lock"
        self.pid_path = cfg.runtime_path / "supervisor.pid"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            pid = read_pid(self.pid_path)
            raise AlreadyRunning(f"a supervisor is already running (pid {pid})") from None
        self._fh = fh
        self.pid_path.write_text(str(os.getpid()))

    def release(self) -> None:
        if self._fh is not None:
            self.pid_path.unlink(missing_ok=True)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def is_held(self) -> bool:
        try:
            fh = open(self.path, "a+")
        except OSError:
            return False
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class Supervisor:
    def __init__(self, cfg: Config, *, foreground: bool = False) -> None:
        self.cfg = cfg
        self.foreground = foreground
        self.lock = InstanceLock(cfg)
        self.children: dict[str, Child] = {
            name: Child(actor_spec(name), RestartTracker(cfg.actor_settings(name),
                                                         cfg.supervisor))
            for name in cfg.enabled_actors()
        }
        self.started_mono = time.monotonic()
        self.stopping = False
        self.exit_code = 0  # 2: the start was refused for a config reason
        self._stop_event = asyncio.Event()
        self.bus_grace_until = 0.0
        self.kill_switch_reason = ""
        self.feed: dict[str, FeedStatus] = {}
        self.last_report: ReconcileReport | None = None
        self.last_snapshot: PortfolioSnapshot | None = None
        # Bus health for status (bus/health.py): the supervisor lives as long as the
        # pipeline, so its windows span restarts of any actor. Its view of the whole bus
        # is a thread of its own (healthwatch.py), off this event loop.
        self.health = BusHealth("supervisor", time.monotonic_ns())
        self.health_listener = HealthListener(cfg.bus_sub_endpoint, self.health,
                                              hwm=cfg.bus.hwm)
        self.ctx = zmq.asyncio.Context()
        self.auth: BusAuth | None = None  # loaded in run(), under the instance lock
        self.heartbeat_mismatches = 0
        self.incarnation = new_incarnation()
        self.pub: Publisher | None = None
        self.sub: Subscriber | None = None
        self._control_server: RequestServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._env = self._child_env()

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("BTCBOT_LOG_STDERR", None)
        return env

    # --- lifecycle -------------------------------------------------------------------
    async def run(self) -> int:
        self.lock.acquire()  # raises AlreadyRunning
        try:
            # First start: a keypair per identity and the roster (bus/auth.py). A host
            # with a host_id (a subset of the actors, start --only) mints only its own.
            ensure_keys(keys_dir_of(self.cfg.data_path), self._identities())
            self.auth = BusAuth.load(keys_dir_of(self.cfg.data_path),
                                     self.cfg.identity(SUPERVISOR))
        except KeysError as exc:
            logger.error("supervisor: bus keys: {}", exc)
            self.lock.release()
            self.ctx.destroy(linger=0)
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop)
        logger.info("supervisor {} starting in {} mode: {}", os.getpid(), self.cfg.mode,
                    ", ".join(self.children))
        if ignored_live_credentials(os.environ, self.cfg.mode, self.cfg.exchange.api_key):
            logger.warning("paper mode: live exchange credentials are set and IGNORED; the "
                           "simulator's own keys are used, and no child sees the live ones")
        try:
            self._open_sockets()
            self._tasks = [
                asyncio.create_task(self._listen(), name="listen"),
                asyncio.create_task(self._serve_control(), name="control"),
                asyncio.create_task(self._monitor(), name="monitor"),
                asyncio.create_task(self._sample_loop(), name="sample"),
            ]
            self._tasks += [asyncio.create_task(self._probe_http(child), name=f"probe-{n}")
                            for n, child in self.children.items() if not child.heartbeats]
            await self._start_all()
            if not self.stopping:
                sdnotify.notify("READY=1")
            await self._stop_event.wait()
        finally:
            await self._stop_all()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for closable in (self._control_server, self.sub, self.pub):
                if closable is not None:
                    closable.close()
            self.health_listener.stop()
            self._auth().close()
            self.ctx.destroy(linger=0)
            self.lock.release()
            logger.info("supervisor stopped")
        return self.exit_code

    async def _serve_control(self) -> None:
        assert self._control_server is not None
        await self._control_server.serve()

    def request_stop(self) -> None:
        self.stopping = True
        self._stop_event.set()
        sdnotify.notify("STOPPING=1")

    def _open_sockets(self) -> None:
        assert self.auth is not None
        self._control_server = RequestServer(self.ctx, self.cfg.supervisor_endpoint,
                                             self._handle_command, commands=SupervisorChannel,
                                             auth=self.auth)
        self.sub = Subscriber(self.ctx, self.cfg.bus_sub_endpoint,
                              ["hb.", "md.status", "reconcile.report", "portfolio"],
                              name="supervisor", reconnect_ivl_ms=20, auth=self.auth)
        self.health_listener.start(self.auth)
        self.pub = Publisher(self.ctx, self.cfg.bus_pub_endpoint, "supervisor", self.incarnation,
                             auth=self.auth)

    async def _start_all(self) -> None:
        """Start in dependency order (cfg.enabled_actors), each waiting for READY. The
        configured symbols are checked once the exchange is up, before any actor (when
        marketdata runs here: replay's pipelines and a split host may not run it)."""
        checked = "marketdata" not in self.children  # the symbols are marketdata's to use
        for child in self.children.values():
            if self.stopping:
                return
            if not checked and not (child.spec.infrastructure or child.spec.role == "exchange"):
                checked = True
                if not await self._check_symbols():
                    return
            self._spawn(child)
            await self._wait_ready(child, self.cfg.actor_settings(child.name).start_timeout_s)

    async def _check_symbols(self) -> bool:
        """False (and the supervisor stopping with exit 2 or 1) when start must not go on;
        actors/supervisor/symbols.py says when."""
        action, message = judge(self.cfg.mode, await check_symbols(self.cfg),
                                simulator_ours="exchange-sim" in self.children)
        if action == "start":
            logger.info("symbols listed by the exchange: {}",
                        ", ".join(self.cfg.marketdata.symbols))
            return True
        if not self.foreground:  # start --detach prints the daemon's stderr on failure
            print(f"btcbot-supervisor: {message}", file=sys.stderr, flush=True)
        if action == "warn":
            logger.warning(message)
            return True
        logger.error(message)
        self.exit_code = 2 if action == "refuse_usage" else 1
        self.request_stop()
        return False

    async def _wait_ready(self, child: Child, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if child.running and child.heard.ready:
                return True
            if not child.running and child.restart_due is None:
                return False  # exited and not going to be restarted
            await asyncio.sleep(0.02)
        return False

    def _spawn(self, child: Child) -> None:
        child.spawn(self.cfg, child_environment(self._env, child.spec, self.cfg.mode))
        logger.info("started {} (pid {})", child.name, child.pid)
        if child.spec.infrastructure:
            self._grace_after_infrastructure_start()

    def _grace_after_infrastructure_start(self) -> None:
        # Every heartbeat travels through the bus: while it restarts, nobody is late.
        timeout = max(self.cfg.actor_settings(n).heartbeat_timeout_s for n in self.children)
        self.bus_grace_until = time.monotonic() + timeout

    async def _stop_all(self) -> None:
        """SIGTERM in reverse start order, SIGKILL after the timeout; the
        infrastructure (the bus) last, so the others' goodbyes still travel."""
        self.stopping = True
        for child in self.children.values():
            child.restart_due = None
        order = [c for c in reversed(self.children.values()) if c.running]
        for last in (False, True):
            wave = [c for c in order if c.spec.infrastructure == last]
            for child in wave:
                child.signal(signal.SIGTERM)
            await self._reap(wave, self.cfg.supervisor.stop_timeout_s)

    async def _reap(self, children: list[Child], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(children)
        while pending and time.monotonic() < deadline:
            pending = [c for c in pending if c.running]
            await asyncio.sleep(0.02)
        for child in pending:
            if child.running:
                logger.warning("{} did not stop in {:.0f}s: SIGKILL", child.name, timeout_s)
                child.signal(signal.SIGKILL)
        for child in pending:
            if child.proc is not None:
                await asyncio.to_thread(child.proc.wait)

    # --- watching --------------------------------------------------------------------
    async def _listen(self) -> None:
        assert self.sub is not None
        while True:
            topic, packet = await self.sub.recv()
            body = packet.body
            if isinstance(body, Heartbeat):
                # The proxy lets only actor X publish hb.X; a body naming another actor
                # on X's topic is X lying about someone else, ignored and counted.
                if topic != f"hb.{body.actor}":
                    self.heartbeat_mismatches += 1
                    logger.warning("supervisor: ignored a heartbeat for {!r} on {!r}",
                                   body.actor, topic)
                    continue
                self._on_heartbeat(body)
            elif isinstance(body, FeedStatus):
                self.feed[body.symbol] = body
            elif isinstance(body, ReconcileReport):
                self.last_report = body
            elif isinstance(body, PortfolioSnapshot):
                self.last_snapshot = body

    def _on_heartbeat(self, hb: Heartbeat) -> None:
        child = self.children.get(hb.actor)
        if child is None or child.pid != hb.pid:
            return  # a heartbeat from a previous incarnation still in flight
        now = time.monotonic()
        if hb.ready and not child.heard.ready:
            logger.info("{} ready in {:.3f}s", child.name, now - child.started_mono)
        child.heard.state, child.heard.ready = hb.state, hb.ready
        child.heard.counters, child.heard.info = hb.counters, hb.info
        child.heard.log_sink = hb.log_sink
        child.heard.last_mono = now

    async def _monitor(self) -> None:
        watchdog_sent = 0.0
        while True:
            now = time.monotonic()
            for child in self.children.values():
                self._check_exit(child, now)
                self._check_liveness(child, now)
                if child.restart_due is not None and now >= child.restart_due and not self.stopping:
                    child.restarts += 1
                    child.tracker.note_restart(now)
                    self._spawn(child)
            # The supervisor's own heartbeat for systemd's WatchdogSec= (deploy/): sent
            # only while this loop runs, so a stuck event loop stops feeding it.
            if now - watchdog_sent >= 1.0:
                sdnotify.notify("WATCHDOG=1")
                watchdog_sent = now
            await asyncio.sleep(MONITOR_INTERVAL_S)

    def _check_exit(self, child: Child, now: float) -> None:
        if child.proc is None or child.running or child.exit_handled:
            return
        child.exit_handled = True
        rc = child.proc.returncode
        uptime = now - child.started_mono
        reason = child.killed_for or (f"exit code {rc}" if rc >= 0 else f"signal {-rc}")
        child.last_exit = f"{reason} after {uptime:.1f}s, pid {child.proc.pid}"
        if self.stopping:
            return
        logger.warning("{} exited: {}", child.name, child.last_exit)
        failed_rc = None if child.killed_for else rc
        if not child.tracker.should_restart(failed_rc, stopping=self.stopping):
            return
        child.tracker.record_exit(uptime, now)
        if child.tracker.over_intensity(now):
            self._give_up(child)
            return
        delay = child.tracker.backoff_s()
        child.restart_due = now + delay
        logger.info("restarting {} in {:.2f}s", child.name, delay)

    def _check_liveness(self, child: Child, now: float) -> None:
        """Heartbeat timeout → SIGKILL (works on a SIGSTOPped process too)."""
        if not child.running or child.killed_for:
            return
        settings = self.cfg.actor_settings(child.name)
        if not child.heard.ready:
            if now - child.started_mono > settings.start_timeout_s:
                self._kill(child, f"not ready within {settings.start_timeout_s:.0f}s")
            return
        if (child.heartbeats and not child.spec.infrastructure
                and not self._infrastructure_healthy(now)):
            return  # their heartbeats cannot reach us; the bus is the one to judge
        if now - child.heard.last_mono > settings.heartbeat_timeout_s:
            self._kill(child, f"heartbeat timeout ({now - child.heard.last_mono:.1f}s)")

    def _infrastructure_healthy(self, now: float) -> bool:
        """Can heartbeats reach us? Not while a carrier (the bus) restarts or is late."""
        if now < self.bus_grace_until:
            return False
        interval = self.cfg.supervisor.heartbeat_interval_s
        return all(c.running and c.heard.ready and now - c.heard.last_mono < 2.5 * interval
                   for c in self.children.values() if c.spec.infrastructure)

    def _kill(self, child: Child, why: str) -> None:
        logger.error("{} (pid {}): {}: SIGKILL", child.name, child.pid, why)
        child.killed_for = why
        child.signal(signal.SIGKILL)

    def _give_up(self, child: Child) -> None:
        child.tracker.gave_up = True
        limits = self.cfg.supervisor
        why = (f"{child.name} restarted {limits.intensity_max_restarts} times in "
               f"{limits.intensity_window_s:.0f}s: giving up and setting the kill switch")
        if self.pub is not None:  # announced on state.supervisor (the alerts actor hears it)
            self.pub.publish(StateTransition(actor=child.name, from_state=child.heard.state,
                                             to_state="GAVE_UP", trigger=why))
        if not child.spec.critical(self.cfg):
            logger.error("{} restarted {} times in {:.0f}s: giving up (not critical: trading "
                         "goes on)", child.name, limits.intensity_max_restarts,
                         limits.intensity_window_s)
            return
        logger.critical(why)
        self.kill_switch_reason = why
        self._tasks.append(asyncio.create_task(self._latch_after_give_up(why)))

    async def _latch_after_give_up(self, why: str) -> None:
        try:
            await self._set_latch("kill_switch", True, why)
        except CommandError as exc:  # broadcast done; the executor may be the one gone
            logger.error("kill switch after giving up: {}", exc)

    async def _sample_loop(self) -> None:
        while True:
            for child in self.children.values():
                child.sample_resources()
            await asyncio.sleep(1.0)

    async def _probe_http(self, child: Child) -> None:
        """A child that is not on the bus: its heartbeat is an HTTP round trip."""
        assert child.spec.probe_url is not None, f"{child.name}: http probe without a URL"
        url = child.spec.probe_url(self.cfg)
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if child.running:
                    try:
                        async with session.get(url) as resp:
                            if resp.status == 200:
                                child.heard.last_mono = time.monotonic()
                                if not child.heard.ready:
                                    self._on_probe_ready(child)
                    except (aiohttp.ClientError, TimeoutError, OSError):
                        pass
                await asyncio.sleep(0.05 if not child.heard.ready else 1.0)

    def _on_probe_ready(self, child: Child) -> None:
        child.heard.ready, child.heard.state = True, "READY"
        logger.info("{} ready in {:.3f}s", child.name, time.monotonic() - child.started_mono)

    # --- commands --------------------------------------------------------------------
    async def _handle_command(self, request: CommandRequest[SupervisorChannel]) -> Msg | None:
        cmd = request.body
        if not isinstance(cmd, SupervisorCommand):
            raise CommandError(f"supervisor does not handle {type(cmd).__name__}")
        match cmd.command:
            case "status":
                return StatusReply(json=json.dumps(await self.status()))
            case "stop":
                asyncio.get_running_loop().call_soon(self.request_stop)
                return Ack(detail="stopping")
            case "restart":
                return Ack(detail=await self._restart(cmd.actor))
            case "kill_switch":
                return Ack(detail=await self._set_latch("kill_switch", cmd.value, cmd.reason))
            case "pause" | "resume":
                return Ack(detail=await self._set_latch("paused", cmd.command == "pause",
                                                        cmd.reason))
            case "latch_clear":
                return Ack(detail=await self._set_latch("safety_latch", False, cmd.reason))
        raise CommandError(f"unknown command {cmd.command}")

    async def _restart(self, name: str) -> str:
        child = self.children.get(name)
        if child is None:
            raise CommandError(f"unknown or disabled actor {name!r}: {', '.join(self.children)}")
        child.exit_handled = True  # this exit is ours, not a failure to react to
        if child.running:
            child.killed_for = "operator restart"
            child.signal(signal.SIGTERM)
            await self._reap([child], self.cfg.supervisor.stop_timeout_s)
        child.last_exit = f"operator restart, pid {child.proc.pid if child.proc else 0}"
        child.tracker.gave_up = False
        child.restarts += 1
        self._spawn(child)
        ok = await self._wait_ready(child, self.cfg.actor_settings(name).start_timeout_s)
        return f"{name} restarted (pid {child.pid}){'' if ok else ' but not READY yet'}"

    async def _set_latch(self, latch: str, value: bool, reason: str) -> str:
        """A request to the executor, the one writer of latches: it persists the change
        and then announces it (its portfolio snapshot), which risk and status follow.
        When it cannot be reached the request waits in data/pending-latches.json, which
        the executor applies first thing on its next start (shared/pending_latches.py)."""
        if latch == "kill_switch" and not value:
            self.kill_switch_reason = ""
        if "executor" not in self.children:
            raise CommandError("no executor in this pipeline: nothing can persist the latch")
        if not self.children["executor"].running:
            return self._pending_latch(latch, value, reason, "executor not running")
        client = RequestClient(self.ctx, self.cfg.command_endpoint("executor"), self._auth(),
                               server="executor", timeout_s=2.0, retries=2)
        try:
            await client.request(SetLatch(latch=latch, value=value,  # type: ignore[arg-type]
                                          reason=reason or "operator"))
        except RequestFailed as exc:
            return self._pending_latch(latch, value, reason, f"executor unreachable: {exc}")
        finally:
            client.close()
        return f"{latch} {'set' if value else 'cleared'}"

    def _identities(self) -> list[str]:
        if not self.cfg.bus.host_id:
            return list(IDENTITIES)
        names = [n for n in self.children if n in ACTORS] + [SUPERVISOR, OPERATOR]
        return [self.cfg.identity(n) for n in names]

    def security_counters(self) -> dict[str, int]:
        """The supervisor's own refusals (its control socket is a CURVE server too)."""
        counters = dict(self.auth.counters) if self.auth is not None else {}
        if self._control_server is not None:
            counters["cmd_unauthorized"] = self._control_server.stats["unauthorized"]
            counters["cmd_malformed"] = self._control_server.stats["malformed"]
        counters["heartbeat_mismatches"] = self.heartbeat_mismatches
        return counters

    def _auth(self) -> BusAuth:
        assert self.auth is not None, "keys are loaded before any socket opens"
        return self.auth

    def _pending_latch(self, latch: str, value: bool, reason: str, why: str) -> str:
        path = pending_latches.path_in(self.cfg.data_path)
        pending_latches.append(path, latch, value, reason or "operator")
        logger.warning("{} request kept in {} ({})", latch, path, why)
        return (f"{latch} {'set' if value else 'cleared'}: pending-persist ({why}; the "
                f"executor applies it first on its next start, from {path})")

    async def _query_snapshot(self) -> PortfolioSnapshot | None:
        if "executor" not in self.children or not self.children["executor"].running:
            return self.last_snapshot
        client = RequestClient(self.ctx, self.cfg.command_endpoint("executor"), self._auth(),
                               server="executor", timeout_s=0.5, retries=0)
        try:
            reply = await client.request(SnapshotQuery())
            if isinstance(reply, PortfolioSnapshot):
                self.last_snapshot = reply
        except RequestFailed:
            pass
        finally:
            client.close()
        return self.last_snapshot

    async def status(self) -> dict[str, object]:
        snapshot = await self._query_snapshot()
        return build_status(self, snapshot, time.monotonic())
