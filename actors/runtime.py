"""The actor runtime: one process, one asyncio event loop, used by every actor.

It gives an actor its config, logging, bus connections (publisher, subscriber,
and optionally a command server), the shared FSM with every transition
published on ``state.<actor>``, a heartbeat on ``hb.<actor>`` every interval,
obedience to ``control`` messages, graceful SIGTERM and death with its parent.

An actor subclasses ``Actor`` and overrides the hooks it needs; the runtime owns
the loop and the lifecycle: INIT → LOCKING → (setup) → READY … → STOPPING.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import sys
from collections import Counter
from collections.abc import Coroutine
from typing import Any, ClassVar

import zmq.asyncio
from loguru import logger

from bus.auth import BusAuth, KeysError, load_for
from bus.messages import (
    ActorInfo,
    CommandRequest,
    Control,
    Heartbeat,
    Msg,
    Packet,
    Ping,
    PingCommand,
    ReplayStart,
    StateTransition,
)
from bus.transport import CommandError
from bus.wiring import Bus, ClientLike, PublisherLike, ServerLike, SubscriberLike, ZmqBus
from shared.clock import Clock, LiveClock
from shared.config import Config, ConfigError, load_config
from shared.files import PRIVATE_UMASK
from shared.fsm import State, StateMachine
from shared.logging import LOG_HEALTH, setup_logging

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 3


class FatalActorError(Exception):
    """Raise from a hook to stop the actor with a message and a given exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Actor:
    """Base class. Class attributes configure the wiring; hooks do the work."""

    name: ClassVar[str] = "actor"
    subscriptions: ClassVar[tuple[str, ...]] = ()  # topic prefixes besides "control"
    serves_commands: ClassVar[bool] = False
    # True (strategy, risk): data messages reach on_message only from the actor's own
    # first heartbeat that came back through the bus on, a point of the proxy's one
    # order that the recording holds (``joined_hb_seq`` in the heartbeat counters), so
    # the actor's inputs are exactly a recorded stretch of the stream. What came before
    # is what a slow joiner may or may not have received; replay --verify starts the
    # replayed actor at the same point (ReplayStart). Controls always pass (a kill
    # switch is never ignored).
    deterministic_inputs: ClassVar[bool] = False
    commands: ClassVar[Any] = PingCommand  # the union this actor's command socket decodes

    def __init__(self, cfg: Config, *, clock: Clock | None = None,
                 bus: Bus | None = None) -> None:
        """``clock`` and ``bus`` are injected by the deterministic simulation (virtual
        time, in-memory bus); a real process gets the live clock and ZeroMQ."""
        self.cfg = cfg
        self.clock: Clock = clock or LiveClock()
        self.bus: Bus = bus or ZmqBus(lambda: self.auth)
        # A real process handles its signals; a simulated actor shares the process.
        self._own_process = bus is None
        self.incarnation = self.bus.new_incarnation()
        self.started_mono = self._mono()
        self.counters: Counter[str] = Counter()
        self.ready = False
        self._ready_mono = 0.0
        self.paused = False
        self.exit_code = EXIT_OK
        self._auth: BusAuth | None = None
        self.fsm = StateMachine(self.name, listener=self._publish_transition)
        self.pub: PublisherLike | None = None
        self.sub: SubscriberLike | None = None
        self.server: ServerLike | None = None
        self._stop = asyncio.Event()
        self._joined = asyncio.Event()  # our own heartbeat came back through the bus
        self.joined_hb_seq = 0  # the seq of that heartbeat (0: not yet)
        # replay --verify: the recorded actor's starting point (ReplayStart) opens input.
        self._verify = cfg.replay.verify
        self._inputs_open = not self.deterministic_inputs
        self._tasks: set[asyncio.Task[Any]] = set()
        self._parent_pid = os.getppid()

    # --- hooks for subclasses --------------------------------------------------------
    async def setup(self) -> None:
        """Acquire resources (state LOCKING). Leave the FSM in LOCKING to go READY, or
        move it yourself (e.g. to DEGRADED_RECOVERY)."""

    async def on_message(self, topic: str, packet: Packet) -> None:
        """A data-plane message on one of ``subscriptions``."""

    async def handle_command(self, request: CommandRequest[Any]) -> Msg | None:
        """A command on ``cmd.<actor>``; raise ``CommandError`` to refuse it."""
        if isinstance(request.body, Ping):
            return None
        raise CommandError(f"{self.name} does not handle {type(request.body).__name__}")

    async def on_control(self, control: Control) -> None:
        """Operator control. The default handles pause/resume and shutdown."""
        if control.command == "pause":
            self.paused = True
        elif control.command == "resume":
            self.paused = False
        elif control.command == "shutdown":
            self.stop()

    async def teardown(self) -> None:
        """Release resources; called once on the way out."""

    def heartbeat_counters(self) -> dict[str, int]:
        return {}

    def heartbeat_info(self) -> ActorInfo | None:
        return None

    # --- services for subclasses -----------------------------------------------------
    @property
    def auth(self) -> BusAuth:
        """This actor's CURVE identity, loaded when the first socket opens (at start)."""
        if self._auth is None:
            try:
                self._auth = load_for(self.cfg.data_path, self.cfg.identity(self.name))
            except KeysError as exc:
                # Not a transient fault: restarting cannot create a key (exit 2, why).
                raise FatalActorError(f"bus keys: {exc}", EXIT_CONFIG) from None
        return self._auth

    def publish(self, body: Msg, topic: str | None = None) -> None:
        assert self.pub is not None
        self.pub.publish(body, topic)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A supervised background task: if it dies with an error the actor fails
        loudly (exit 1, the supervisor restarts it) instead of limping on."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    @property
    def ctx(self) -> zmq.asyncio.Context:
        """The ZeroMQ context, for actors that open sockets of their own (recorder)."""
        if not isinstance(self.bus, ZmqBus):
            raise RuntimeError(f"{self.name}: no ZeroMQ context on an in-memory bus")
        return self.bus.ctx

    def request_client(self, endpoint: str, *, server: str, timeout_s: float,
                       retries: int) -> ClientLike:
        """A Lazy Pirate client to ``server``'s command socket at ``endpoint``."""
        return self.bus.client(endpoint, server=server, timeout_s=timeout_s, retries=retries)

    def _mono(self) -> float:
        return self.clock.mono_ns() / 1e9

    def stop(self, exit_code: int = EXIT_OK) -> None:
        self.exit_code = max(self.exit_code, exit_code)
        self._stop.set()

    @property
    def uptime_s(self) -> float:
        return self._mono() - self.started_mono

    # --- lifecycle ---------------------------------------------------------------
    async def run(self) -> int:
        if self._own_process:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            self._connect()
            self.fsm.to(State.LOCKING, "start")
            if os.environ.get("BTCBOT_TEST_FAIL_AT_START") == self.name:
                raise FatalActorError("test hook BTCBOT_TEST_FAIL_AT_START")
            self.spawn(self._heartbeat_loop(), "heartbeat")
            self.spawn(self._message_loop(), "messages")
            if self.server is not None:
                self.spawn(self.server.serve(), "commands")
            await self.setup()
            if self.fsm.state == State.LOCKING:
                self.fsm.to(State.READY, "started")
            self.ready = True
            self._ready_mono = self._mono()
            self._send_heartbeat()
            logger.info("{} ready (incarnation {}, pid {})", self.name, self.incarnation,
                        os.getpid())
            await self._stop.wait()
        except FatalActorError as exc:
            logger.error("{} fatal: {}", self.name, exc)
            self.exit_code = exc.exit_code
            self._to_fatal(str(exc))
        except Exception as exc:
            logger.exception("{} crashed", self.name)
            self.exit_code = EXIT_FAILURE
            self._to_fatal(repr(exc))
        finally:
            await self._shutdown()
        return self.exit_code

    def _connect(self) -> None:
        hwm = self.cfg.bus.hwm
        self.pub = self.bus.publisher(self.cfg.bus_pub_endpoint, self.name, self.incarnation,
                                      hwm=hwm, clock=self.clock)
        # replay --verify: where the recorded actor began, and the recorded controls
        # (replay/verify.py; only a verify pipeline subscribes to them).
        extra = (["replay.start", "replay.control"] if self.deterministic_inputs
                 and self._verify else [])
        self.sub = self.bus.subscriber(
            self.cfg.bus_sub_endpoint, ["control", f"hb.{self.name}", *extra,
                                        *self.subscriptions],
            hwm=hwm, name=self.name, clock=self.clock)
        if self.serves_commands:
            self.server = self.bus.server(self.cfg.command_endpoint(self.name),
                                          self.handle_command, commands=self.commands)

    def _to_fatal(self, why: str) -> None:
        if self.fsm.can(State.ERROR_FATAL):
            self.fsm.to(State.ERROR_FATAL, why[:200])

    async def _shutdown(self) -> None:
        if self.fsm.can(State.STOPPING):
            self.fsm.to(State.STOPPING, "stop")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.teardown(), timeout=5.0)
        except Exception:
            logger.exception("{} teardown failed", self.name)
        self._send_heartbeat()
        for closable in (self.server, self.sub, self.pub):
            if closable is not None:
                closable.close()
        if self._auth is not None:
            self._auth.close()
        self.bus.close()
        logger.info("{} stopped (exit {})", self.name, self.exit_code)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        if exc is not None:
            logger.opt(exception=exc).error("{} task {} died", self.name, task.get_name())
            self._to_fatal(f"task {task.get_name()} died: {exc!r}")
            self.stop(EXIT_FAILURE)

    async def _message_loop(self) -> None:
        assert self.sub is not None
        while True:
            topic, packet = await self.sub.recv()
            try:
                body = packet.body
                if (isinstance(body, Heartbeat) and body.actor == self.name
                        and packet.env.incarnation == self.incarnation):
                    if not self._joined.is_set():
                        self.joined_hb_seq = packet.env.seq
                        if not self._verify:
                            self._inputs_open = True
                    self._joined.set()
                    if "hb." not in self.subscriptions:
                        continue
                if isinstance(body, ReplayStart):
                    if body.actor == self.name and self._verify:
                        self._inputs_open = True
                    continue
                if isinstance(body, Control) and (topic == "control" or (
                        self._verify and topic == "replay.control")):
                    if body.target in ("*", self.name):
                        self.counters["control"] += 1
                        await self.on_control(packet.body)
                elif self._inputs_open:
                    await self.on_message(topic, packet)
                else:
                    self.counters["inputs_before_join"] += 1
            except FatalActorError:
                raise
            except Exception:
                # One bad message must not stop the actor; it is counted and logged.
                self.counters["handler_errors"] += 1
                logger.exception("{}: handler failed on {}", self.name, topic)

    async def _heartbeat_loop(self) -> None:
        interval = self.cfg.supervisor.heartbeat_interval_s
        while True:
            if LOG_HEALTH.failing or LOG_HEALTH.recovered:
                # The failing state clears only on a line that gets written: an actor
                # that seldom logs would report its log file failing long after space
                # was freed. One line per heartbeat while failing finds out, and once a
                # line got through (this one or any other) the log says what was lost.
                logger.warning("{}: the log file was failing ({}, {} lines lost); "
                               "writing again", self.name,
                               LOG_HEALTH.failing or LOG_HEALTH.recovered, LOG_HEALTH.errors)
                if not LOG_HEALTH.failing:  # that line was written: it said so
                    LOG_HEALTH.recovered = ""
            self._send_heartbeat()
            self._check_parent()
            await self._sleep_until_next_heartbeat(interval)

    async def _sleep_until_next_heartbeat(self, interval: float) -> None:
        # A PUB drops what it sends before the bus's subscriptions reach it (slow
        # joiner), so until our own heartbeat comes back we repeat it quickly: the
        # supervisor then sees READY within milliseconds instead of one interval.
        settled = self.ready and self._mono() - self._ready_mono > 0.5
        if self._joined.is_set() and settled:
            await asyncio.sleep(interval)
            return
        if self._joined.is_set():  # others (the supervisor) may still be joining
            await asyncio.sleep(min(0.1, interval))
            return
        try:
            await asyncio.wait_for(self._joined.wait(), timeout=min(0.05, interval))
        except TimeoutError:
            pass

    def _check_parent(self) -> None:
        # PR_SET_PDEATHSIG normally kills us with the supervisor; this is the backstop.
        if self._own_process and self._parent_pid > 1 and os.getppid() != self._parent_pid:
            logger.error("{}: parent {} is gone; stopping", self.name, self._parent_pid)
            self.stop(EXIT_FAILURE)

    def _send_heartbeat(self) -> None:
        if self.pub is None:
            return
        counters = dict(self.counters)
        if self.sub is not None:
            counters.update(self.sub.stats.as_counters())
        if self.server is not None:
            counters.update({f"cmd_{k}": v for k, v in self.server.stats.items()})
        if self._auth is not None:
            counters.update(self._auth.heartbeat_counters())
        counters.update(self.heartbeat_counters())
        counters["log_errors"] = LOG_HEALTH.errors
        if self.deterministic_inputs and self.joined_hb_seq:
            counters["joined_hb_seq"] = self.joined_hb_seq
        self.publish(Heartbeat(
            actor=self.name, pid=os.getpid(), state=str(self.fsm.state), ready=self.ready,
            uptime_s=round(self.uptime_s, 3), counters=counters, info=self.heartbeat_info(),
            log_sink=LOG_HEALTH.describe() if LOG_HEALTH.failing else "",
        ))

    def _publish_transition(self, actor: str, old: State, new: State, trigger: str) -> None:
        if self.pub is not None:
            self.publish(StateTransition(actor=actor, from_state=str(old), to_state=str(new),
                                         trigger=trigger))


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Linux: ask the kernel to send ``sig`` to this process when its parent dies,
    so no orphan keeps trading after the supervisor is SIGKILLed."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, sig, 0, 0, 0)


def parse_actor_args(argv: list[str] | None, name: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"btcbot-{name}")
    parser.add_argument("--config", default="supervisor.toml")
    parser.add_argument("--mode", default=None)
    return parser.parse_args(argv)


def run_actor(cls: type[Actor], argv: list[str] | None = None) -> int:
    """Entry point of every actor process. Exit 2 on bad config, naming the field."""
    os.umask(PRIVATE_UMASK)  # inherited from the supervisor; also when started by hand
    args = parse_actor_args(argv, cls.name)
    try:
        cfg = load_config(args.config, mode=args.mode)
    except ConfigError as exc:
        print(f"{cls.name}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(cfg, cls.name)
    try:
        actor = cls(cfg)
    except FatalActorError as exc:
        logger.error("{}: {}", cls.name, exc)
        print(f"{cls.name}: {exc}", file=sys.stderr)
        return exc.exit_code
    profile_dir = os.environ.get("BTCBOT_PROFILE_DIR")
    if not profile_dir:
        return asyncio.run(actor.run())
    return _run_profiled(actor, profile_dir)


def _run_profiled(actor: Actor, profile_dir: str) -> int:
    """Benchmarks: cProfile the whole actor, stats written to <dir>/<actor>.prof at a
    graceful stop (a SIGKILLed actor writes nothing)."""
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(asyncio.run, actor.run())
    finally:
        os.makedirs(profile_dir, exist_ok=True)
        profiler.dump_stats(os.path.join(profile_dir, f"{actor.name}.prof"))


def main_for(cls: type[Actor]) -> None:
    sys.exit(run_actor(cls))
