"""Replay a recording into an isolated pipeline, and verify decisions (DESIGN §6).

Pieces, each usable alone (tests and benchmarks use them directly):

- ``select_records``: the records to feed (topic prefixes, time window) plus *primers*:
  with ``--from``, the last record before the window of each state topic
  (``md.rules.*``, ``md.status``, ``portfolio``), so the pipeline starts knowing the
  exchange rules, feed freshness and portfolio that the recorded session knew then.
- ``Reframer``: gives every replayed payload a new envelope (see its docstring for the
  gap-detection decision); the body bytes are the recorded ones, never re-encoded.
- ``feed``: publishes at the recorded pacing divided by ``speed``, or as fast as
  possible (``speed=None``).
- ``IsolatedPipeline``: a throw-away pipeline (own temp runtime/log/data dirs, own bus,
  dry-run executor with a temp DB -- in ``replay_mirror`` mode for --verify --, strategy,
  risk), started through
  ``btcbot-supervisor start --detach`` or, with ``backend="direct"``, by starting
  ``python -m bus`` and ``python -m actors.<name>`` itself. It never uses the live
  runtime dir, DB or bus endpoints: every path is inside its temp dir and the bus
  endpoints are forced to ipc:// in that dir.
- ``verify``: collects the decisions the replayed pipeline makes and compares them with
  the recorded ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import zmq

from bus.messages import (
    Envelope,
    EnvelopeOnly,
    Heartbeat,
    Intent,
    OrderEvent,
    PortfolioSnapshot,
    RiskDecision,
    envelope_decoder,
    packet_decoder,
)
from bus.transport import Publisher, new_incarnation
from shared.config import ACTOR_NAMES, Config, load_config, to_toml
from shared.recording import (
    ReadReport,
    Record,
    SegmentReader,
    last_before,
    read_recording,
    segment_paths,
)

MARKET_TOPICS = ("md.",)
# What strategy and risk consume from other actors, so their state follows the recording.
VERIFY_TOPICS = ("md.", "portfolio", "order.", "fill.")
PRIMER_TOPICS = ("md.rules.", "md.status", "portfolio")
# The recorded executor's output (reactions to orders and books), fed unpaced in --verify.
EXECUTOR_TOPICS = ("order.", "fill.", "portfolio")
PIPELINE_ACTORS = ("executor", "risk", "strategy")
PROBE_TOPIC = "replay.probe"
# Never handed to the replay pipeline's processes: it must not be able to trade for real.
_SCRUBBED_ENV = ("BTCTURK_API_KEY", "BTCTURK_API_SECRET", "BTCBOT_LIVE_TRADING",
                 "BTCBOT_LIVE_TRADING_ACK")


class ReplayError(Exception):
    """The replay could not run (pipeline did not start, bad recording, ...)."""


# --- selection -----------------------------------------------------------------------


@dataclass
class Selection:
    records: list[Record]
    primers: list[Record]
    reports: dict[str, ReadReport]


def _matches(topic: str, prefixes: Sequence[str]) -> bool:
    return topic.startswith(tuple(prefixes))


def select_records(
    target: str | os.PathLike[str],
    topics: Sequence[str],
    from_ns: int | None = None,
    to_ns: int | None = None,
) -> Selection:
    reports: dict[str, ReadReport] = {}
    records = list(read_recording(target, topics, from_ns, to_ns, reports))
    primers = _primers(target, topics, from_ns) if from_ns is not None else []
    return Selection(records, primers, reports)


def _primers(target: str | os.PathLike[str], topics: Sequence[str], from_ns: int) -> list[Record]:
    """The last record before ``from_ns`` of every state topic that is also selected."""
    wanted = [p for p in PRIMER_TOPICS if any(p.startswith(t) or t.startswith(p)
                                              for t in topics)]
    if not wanted:
        return []
    # Walks back from the window through the segment indexes: a window late in a long
    # recording opens only the segments that hold the state it needs.
    last = last_before(target, wanted, from_ns, keep=lambda topic: _matches(topic, topics))
    return sorted(last.values(), key=lambda r: r.recv_ns)


# --- re-framing ----------------------------------------------------------------------


_env_encoder = msgspec.msgpack.Encoder()


class Reframer:
    """New envelope, recorded body.

    Decision: a replay selects topics (md.* without the heartbeats that shared the
    marketdata publisher's sequence, a time window, ...), so the recorded sequence
    numbers would show gaps to every consumer, and a recorded ``portfolio`` would look
    like a restart of the replay pipeline's own executor. So each replayed *topic* is its
    own stream: ``source = "replay/<recorded source>/<topic>"``, a fresh incarnation per
    replay run, seq 1, 2, 3… without holes. Any prefix subscription receives whole topics,
    so no consumer sees a gap. ``wall_ns`` and ``mono_ns`` stay the recorded ones: they
    are the message clock that strategy and risk decide by, so time-dependent decisions
    (cooldowns, throttles, data age) replay as they were made.
    """

    def __init__(self, incarnation: str | None = None) -> None:
        self.incarnation = incarnation or f"replay-{new_incarnation()}"
        self._seq: dict[str, int] = {}
        self.malformed = 0

    def __call__(self, topic: str, payload: bytes) -> bytes | None:
        try:
            packet = envelope_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.malformed += 1  # recorded as received, but not worth feeding anyone
            return None
        env = packet.env
        source = f"replay/{env.source}/{topic}"
        seq = self._seq.get(source, 0) + 1
        self._seq[source] = seq
        new_env = Envelope(env.schema, source, self.incarnation, seq, env.wall_ns, env.mono_ns)
        return _env_encoder.encode(EnvelopeOnly(new_env, packet.body))


# --- feeding ---------------------------------------------------------------------------


@dataclass
class FeedStats:
    published: int = 0
    skipped: int = 0  # undecodable payloads not fed
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0


def feed(
    publish: Callable[[bytes, bytes], None],
    records: Iterable[Record],
    *,
    speed: float | None,
    reframer: Reframer,
    progress: Callable[[int], None] | None = None,
    barrier: Callable[[Record], bool] | None = None,
    unpaced: tuple[str, ...] = (),
) -> FeedStats:
    """Publish ``records`` in order. ``speed=None`` is as fast as possible; otherwise a
    record recorded ``d`` ns after the first is sent ``d / speed`` ns after the start.
    Lateness is never "caught up" by sending in a burst faster than recorded: the
    schedule is absolute, so a late record is sent at once and the next ones are on time.

    ``barrier``: records it returns True for are not published but waited on (verify:
    a recorded decision holds back what the recorded session published after it).
    ``unpaced``: topic prefixes sent as soon as they are reached, not at their recorded
    time (verify: the recorded executor's reactions that preceded the next decision in
    the recording must reach the pipeline before it decides, as they did then)."""
    stats = FeedStats()
    t0 = time.monotonic_ns()
    first_ns: int | None = None
    sleep = time.sleep
    mono = time.monotonic_ns
    for i, rec in enumerate(records):
        if speed is not None and not rec.topic.startswith(unpaced or ("\0",)):
            if first_ns is None:
                first_ns = rec.recv_ns
            due = t0 + int((rec.recv_ns - first_ns) / speed)
            ahead = due - mono()
            if ahead > 200_000:  # sleeping less than 0.2 ms costs more than it keeps
                sleep(ahead / 1e9)
        if barrier is not None and barrier(rec):
            continue
        payload = reframer(rec.topic, rec.payload)
        if payload is None:
            stats.skipped += 1
            continue
        publish(rec.topic.encode(), payload)
        stats.published += 1
        if progress is not None and i % 1000 == 0:
            progress(i)
    stats.elapsed_s = (mono() - t0) / 1e9
    return stats


class ProgressBar:
    """A one-line progress bar on stderr, shown only when stdout is a terminal."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = max(total, 1)
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.1:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rreplay [{bar:<30}] {done}/{self.total} ({frac:5.1%})")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write(f"\rreplay [{'#' * 30}] {self.total}/{self.total} (100.0%)\n")
            sys.stderr.flush()


class BusClient:
    """A publisher (and probe subscriber) on a pipeline's bus, connected for sure: a PUB
    drops what it sends before the bus's subscriptions reach it (slow joiner), so
    ``connect`` sends probes until one comes back through the proxy. Subscriptions
    travel to a new publisher in the order they were made, so once our own probe
    subscription has arrived, those of the pipeline's actors (made earlier) have too."""

    def __init__(self, cfg: Config, *, hwm: int = 1_000_000) -> None:
        self.ctx = zmq.Context()
        self.pub = Publisher(self.ctx, cfg.bus_pub_endpoint, "replay", new_incarnation(),
                             hwm=hwm)
        self._sub_endpoint = cfg.bus_sub_endpoint

    def connect(self, timeout_s: float = 10.0) -> None:
        probe = self.ctx.socket(zmq.SUB)
        probe.setsockopt(zmq.LINGER, 0)
        probe.setsockopt(zmq.SUBSCRIBE, PROBE_TOPIC.encode())
        probe.connect(self._sub_endpoint)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self.pub.publish(Heartbeat(actor="replay", pid=os.getpid(), state="READY",
                                           ready=True, uptime_s=0.0, counters={}),
                                 PROBE_TOPIC)
                if probe.poll(50, zmq.POLLIN):
                    probe.recv_multipart()
                    return
        finally:
            probe.close(linger=0)
        raise ReplayError(f"could not reach the replay bus at {self._sub_endpoint}")

    def publish_raw(self, topic: bytes, payload: bytes) -> None:
        self.pub.publish_raw(topic, payload)

    def close(self) -> None:
        self.pub.close()
        self.ctx.destroy(linger=2000)  # let the last frames leave before we go


# --- the isolated pipeline -----------------------------------------------------------


def pipeline_config(
    base: Config | None, root: Path, actors: Iterable[str], *, strategy: dict[str, Any] | None
    = None, risk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The supervisor.toml document of an isolated pipeline rooted at ``root``.

    Taken from ``base``: strategy, risk, executor (but a temp DB), marketdata symbols,
    gates (never live), supervisor timings, logging. Forced: mode dry-run, every path in
    ``root``, ipc bus endpoints in ``root``, only ``actors`` (plus the bus) enabled."""
    enabled = {"bus", *actors}
    b = base
    doc: dict[str, Any] = {
        "mode": "dry-run",
        "runtime_dir": str(root / "run"),
        "log_dir": str(root / "logs"),
        "data_dir": str(root / "data"),
        "actors": {n: {"enabled": n in enabled} for n in ACTOR_NAMES},
        "recorder": {"path": str(root / "recordings")},
        "executor": {"db_path": str(root / "data" / "replay.db")},
    }
    if b is not None:
        doc["actors"] = {
            n: {**msgspec.to_builtins(b.actor_spec(n)), "enabled": n in enabled}
            for n in ACTOR_NAMES
        }
        doc["strategy"] = msgspec.to_builtins(b.strategy)
        doc["risk"] = msgspec.to_builtins(b.risk)
        doc["marketdata"] = msgspec.to_builtins(b.marketdata)
        doc["supervisor"] = msgspec.to_builtins(b.supervisor)
        doc["logging"] = msgspec.to_builtins(b.logging)
        gates = msgspec.to_builtins(b.gates)
        gates.update(live_trading=False, live_trading_ack="")
        doc["gates"] = gates
        doc["executor"] = {**msgspec.to_builtins(b.executor),
                           "db_path": str(root / "data" / "replay.db")}
        doc["recorder"] = {**msgspec.to_builtins(b.recorder), "path": str(root / "recordings")}
    if strategy:
        doc["strategy"] = {**doc.get("strategy", {}), **strategy}
    if risk:
        doc["risk"] = {**doc.get("risk", {}), **risk}
    return doc


def supervisor_available() -> bool:
    try:
        from actors.supervisor.cli import cli
    except ImportError:
        return False
    return "start" in getattr(cli, "commands", {}) and "stop" in cli.commands


class IsolatedPipeline:
    """A throw-away pipeline: ``with IsolatedPipeline(base_cfg) as p: ... p.cfg ...``.

    ``backend``: "supervisor" runs ``btcbot-supervisor --config TMP start --detach`` and
    ``stop``; "direct" starts the bus and each actor process itself and waits for
    their READY heartbeats; "auto" prefers the supervisor when it is installed."""

    def __init__(
        self,
        base: Config | None = None,
        actors: Iterable[str] = PIPELINE_ACTORS,
        *,
        backend: str = "auto",
        record: bool = False,
        strategy: dict[str, Any] | None = None,
        risk: dict[str, Any] | None = None,
        keep: bool = False,
        start_timeout_s: float = 30.0,
        extra: dict[str, Any] | None = None,
        root: str | os.PathLike[str] | None = None,
        strategy_boot: int | None = None,
    ) -> None:
        self.actors = [a for a in ACTOR_NAMES if a in set(actors) | ({"recorder"} if record
                                                                       else set())]
        self.backend = ("supervisor" if supervisor_available() else "direct") if (
            backend == "auto") else backend
        self.keep = keep or root is not None  # a caller's dir is the caller's to remove
        self.start_timeout_s = start_timeout_s
        self.root = Path(root) if root is not None else Path(
            tempfile.mkdtemp(prefix="btcbot-replay-"))
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        doc = pipeline_config(base, self.root, self.actors, strategy=strategy, risk=risk)
        for key, value in (extra or {}).items():
            doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
        self.config_path = self.root / "supervisor.toml"
        self.config_path.write_text(to_toml(doc))
        self.cfg = load_config(self.config_path)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        self._env.pop("BTCBOT_LOG_STDERR", None)
        if strategy_boot is not None:  # the recorded host's boot: the same intent ids
            self._env["BTCBOT_STRATEGY_BOOT"] = str(strategy_boot)

    # --- lifecycle ---
    def __enter__(self) -> IsolatedPipeline:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.backend == "supervisor":
            self._start_supervisor()
        else:
            self._start_direct()

    def stop(self) -> None:
        try:
            if self.backend == "supervisor":
                self._run_cli("stop", timeout_s=60)
            self._stop_direct()
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    @property
    def recordings(self) -> Path:
        return self.cfg.path(self.cfg.recorder.path)

    # --- supervisor backend ---
    def _run_cli(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "actors.supervisor", "--config", str(self.config_path),
                *args]
        return subprocess.run(argv, env=self._env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout_s, check=False)

    def _start_supervisor(self) -> None:
        done = self._run_cli("start", "--detach", timeout_s=self.start_timeout_s + 60)
        if done.returncode != 0:
            raise ReplayError("replay pipeline did not start: "
                              + (done.stderr or done.stdout).decode(errors="replace").strip())

    # --- direct backend ---
    def _start_direct(self) -> None:
        self.cfg.log_path.mkdir(parents=True, exist_ok=True)
        self.cfg.runtime_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        ctx = zmq.Context()
        hb = ctx.socket(zmq.SUB)
        hb.setsockopt(zmq.LINGER, 0)
        hb.setsockopt(zmq.SUBSCRIBE, b"hb.")
        try:
            for name in ["bus", *self.actors]:
                self._spawn(name)
                if name == "bus":
                    hb.connect(self.cfg.bus_sub_endpoint)
                self._wait_ready(hb, name)
        finally:
            hb.close(linger=0)
            ctx.term()

    def _spawn(self, name: str) -> None:
        module = "bus" if name == "bus" else f"actors.{name}"
        out = open(self.cfg.log_path / f"{name}.out", "ab")
        try:
            self._procs[name] = subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(self.config_path)],
                env=self._env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        finally:
            out.close()

    def _wait_ready(self, hb: zmq.Socket, name: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ReplayError(f"replay pipeline: {name} exited with code {proc.returncode}"
                                  f"; see {self.cfg.log_path}")
            if hb.poll(50, zmq.POLLIN):
                topic, payload = hb.recv_multipart()
                try:
                    body = packet_decoder.decode(payload).body
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if isinstance(body, Heartbeat) and body.actor == name and body.ready:
                    return
        raise ReplayError(f"replay pipeline: {name} not READY within {self.start_timeout_s}s")

    def _stop_direct(self) -> None:
        for name in reversed(list(self._procs)):
            proc = self._procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()


# --- verify --------------------------------------------------------------------------


DecisionKey = tuple[str, tuple[str, ...], Decimal, Decimal]


def decision_key(d: RiskDecision) -> DecisionKey:
    """What --verify compares: verdict, reasons, price, quantity (per intent_id)."""
    return (d.verdict, tuple(d.reasons), d.price, d.quantity)


@dataclass
class VerifyResult:
    expected: int = 0
    replayed: int = 0
    matched: int = 0
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def _fmt(key: DecisionKey) -> str:
    verdict, reasons, price, qty = key
    return f"{verdict} reasons={list(reasons)} price={price} quantity={qty}"


def compare_decisions(
    recorded: Sequence[RiskDecision], replayed: Sequence[RiskDecision]
) -> VerifyResult:
    """Match decisions by intent_id (deterministic ids: the same decision has the same
    id) and compare, in order, every decision made for that intent."""
    res = VerifyResult(expected=len(recorded), replayed=len(replayed))
    want: dict[str, list[DecisionKey]] = defaultdict(list)
    got: dict[str, list[DecisionKey]] = defaultdict(list)
    symbol: dict[str, str] = {}
    for d in recorded:
        want[d.intent_id].append(decision_key(d))
        symbol[d.intent_id] = d.symbol
    for d in replayed:
        got[d.intent_id].append(decision_key(d))
        symbol.setdefault(d.intent_id, d.symbol)
    for iid in list(want) + [i for i in got if i not in want]:
        w, g = want.get(iid, []), got.get(iid, [])
        for n in range(max(len(w), len(g))):
            label = f"decision {iid} ({symbol[iid]})" + (f" #{n + 1}" if n else "")
            if n >= len(g):
                res.differences.append(f"missing in replay: {label}: recorded {_fmt(w[n])}")
            elif n >= len(w):
                res.differences.append(f"extra in replay: {label}: replayed {_fmt(g[n])}")
            elif w[n] != g[n]:
                res.differences.append(
                    f"differs: {label}: recorded {_fmt(w[n])} / replayed {_fmt(g[n])}")
            else:
                res.matched += 1
    return res


def decode_decisions(records: Iterable[Record]) -> list[RiskDecision]:
    out = []
    for rec in records:
        try:
            body = packet_decoder.decode(rec.payload).body
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if isinstance(body, RiskDecision):
            out.append(body)
    return out


class DecisionBarrier:
    """Causal lock-step for --verify, so the pipeline's state at each decision is the
    recorded one whatever its speed relative to the recorded session:

    - a recorded decision is not fed, it is waited for: what the recorded session
      published after it is fed only once the pipeline has made it too;
    - a recorded executor message about an intent (an order event, or a portfolio
      listing its order) is a *consequence* of that intent's decision: it waits for
      the pipeline's decision of that intent, even where the recording has it first
      (the recorded executor publishes ``PENDING`` before risk publishes its verdict).

    Executor messages are fed unpaced (``EXECUTOR_TOPICS``): once their cause is
    decided they go at once, so one the recorded risk had seen before its next decision
    (a fill triggered by the same book as that decision) reaches the pipeline first too.
    A decision that does not come (a real difference) costs ``timeout_s``, all waits
    together at most ``budget_s``; compare_decisions then reports it."""

    def __init__(self, collector: DecisionCollector, recorded: Sequence[RiskDecision],
                 timeout_s: float = 1.0, budget_s: float = 10.0) -> None:
        self.collector = collector
        self.timeout_s = timeout_s
        self.budget_s = budget_s
        self.waited_s = 0.0
        self.missed = 0
        self._decided = {d.intent_id for d in recorded}  # intents with a recorded decision
        self._expected: dict[str, int] = defaultdict(int)

    def __call__(self, rec: Record) -> bool:
        """True: a barrier only, not to be fed."""
        if not rec.topic.startswith(("decision.", "order.", "portfolio")):
            return False
        try:
            body = packet_decoder.decode(rec.payload).body
        except (msgspec.DecodeError, msgspec.ValidationError):
            return rec.topic.startswith("decision.")
        if isinstance(body, RiskDecision):
            self._expected[body.intent_id] += 1
            self._wait(body.intent_id, self._expected[body.intent_id])
            return True
        if isinstance(body, OrderEvent):
            causes = [body.intent_id]
        elif isinstance(body, PortfolioSnapshot):
            causes = [o.intent_id for o in body.open_orders]
        else:
            return rec.topic.startswith("decision.")
        for intent_id in causes:
            if intent_id in self._decided:
                self._wait(intent_id, max(1, self._expected[intent_id]))
        return False

    def _wait(self, intent_id: str, count: int) -> None:
        timeout = min(self.timeout_s, max(0.0, self.budget_s - self.waited_s))
        t0 = time.monotonic()
        if not self.collector.wait_for(intent_id, count, timeout):
            self.missed += 1
        self.waited_s += time.monotonic() - t0


class DecisionCollector:
    """Every RiskDecision published on a bus, gathered by a background thread."""

    def __init__(self, cfg: Config) -> None:
        self.decisions: list[RiskDecision] = []
        self.last_mono = time.monotonic()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 1_000_000)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"decision.")
        self._sock.connect(cfg.bus_sub_endpoint)
        self._halt = threading.Event()
        self._seen = threading.Condition()
        self._count: dict[str, int] = defaultdict(int)
        self._thread = threading.Thread(target=self._run, daemon=True, name="decisions")
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            if not self._sock.poll(50, zmq.POLLIN):
                continue
            _, payload = self._sock.recv_multipart()
            try:
                body = packet_decoder.decode(payload).body
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if isinstance(body, RiskDecision):
                with self._seen:
                    self.decisions.append(body)
                    self._count[body.intent_id] += 1
                    self.last_mono = time.monotonic()
                    self._seen.notify_all()

    def wait_for(self, intent_id: str, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` decisions for ``intent_id`` have been made."""
        with self._seen:
            return self._seen.wait_for(lambda: self._count[intent_id] >= count, timeout_s)

    def settle(self, expected: int, quiet_s: float, timeout_s: float) -> None:
        """Wait until the pipeline has gone quiet: no new decision for ``quiet_s`` (and
        at least as many as ``expected``, or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            quiet = time.monotonic() - self.last_mono >= quiet_s
            if quiet and len(self.decisions) >= expected:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self._halt.set()
        self._thread.join(2.0)
        self._sock.close(linger=0)
        self._ctx.term()


def config_differences(recorded_meta: dict[str, Any], cfg: Config) -> list[str]:
    """Strategy/risk parameters that differ between the recording's header and ``cfg``."""
    notes = []
    for section in ("strategy", "risk"):
        then = recorded_meta.get(section)
        if not isinstance(then, dict):
            continue
        now = msgspec.to_builtins(getattr(cfg, section))
        if section == "strategy":  # plug-in parameters read as the table's own keys
            then, now = _flat_params(then), _flat_params(now)
        for key in sorted(set(then) | set(now)):
            if then.get(key) != now.get(key):
                notes.append(f"{section}.{key}: recorded {then.get(key)!r}, now {now.get(key)!r}")
    return notes


def recorded_strategy_boot(target: str | os.PathLike[str], from_ns: int | None,
                           to_ns: int | None) -> int | None:
    """The boot number of the strategy host that made the window's first intent (part of
    every intent id), or None when the window has no intent."""
    for rec in read_recording(target, ("intent.",), from_ns, to_ns):
        try:
            body = packet_decoder.decode(rec.payload).body
        except msgspec.DecodeError:
            continue
        if isinstance(body, Intent):
            return body.boot
    return None


def _flat_params(table: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in table.items() if k != "params"}
    params = table.get("params")
    if isinstance(params, dict):
        out.update(params)
    return out


def recording_meta(target: str | os.PathLike[str]) -> dict[str, Any]:
    paths = segment_paths(target)
    if not paths:
        return {}
    with SegmentReader(paths[0]) as reader:
        return dict(reader.header.meta)


def recorded_decisions(
    target: str | os.PathLike[str], from_ns: int | None, to_ns: int | None
) -> list[RiskDecision]:
    return decode_decisions(read_recording(target, ["decision."], from_ns, to_ns))


# --- the whole command ---------------------------------------------------------------


@dataclass
class ReplayOptions:
    target: str
    speed: float | None = 1.0  # None: as fast as possible
    topics: tuple[str, ...] = ()
    from_ns: int | None = None
    to_ns: int | None = None
    verify: bool = False
    record: bool = False
    keep: bool = False
    backend: str = "auto"
    settle_s: float = 2.0  # verify: quiet time that ends the wait for late decisions
    progress: bool | None = None  # None: only when stdout is a terminal
    strategy: dict[str, Any] | None = None  # overrides (tests)
    risk: dict[str, Any] | None = None


@dataclass
class ReplayOutcome:
    feed: FeedStats
    primers: int
    torn: dict[str, ReadReport]
    verify: VerifyResult | None = None
    config_notes: list[str] = field(default_factory=list)


def run_replay(opts: ReplayOptions, base: Config | None) -> ReplayOutcome:
    """Replay ``opts.target`` into an isolated pipeline (and verify when asked).
    Raises ReplayError when it cannot run at all."""
    topics = opts.topics or (VERIFY_TOPICS if opts.verify else MARKET_TOPICS)
    # --verify reads the recorded decisions in the stream too: barriers, never fed.
    read_topics = (*topics, "decision.") if opts.verify else topics
    sel = select_records(opts.target, read_topics, opts.from_ns, opts.to_ns)
    if not sel.records:
        raise ReplayError(f"nothing to replay: no record of {', '.join(topics)} in the window")
    expected = recorded_decisions(opts.target, opts.from_ns, opts.to_ns) if opts.verify else []
    notes = config_differences(recording_meta(opts.target), base) if (
        opts.verify and base is not None) else []
    torn = {p: r for p, r in sel.reports.items() if r.torn_tail}
    # --verify: the recording carries the recorded executor's order/fill/portfolio
    # messages; the pipeline's executor mirrors them instead of adding its own (see
    # actors/executor/actor.py, mirror mode). A plain replay keeps a normal dry-run one.
    extra = {"executor": {"replay_mirror": opts.verify}}
    with IsolatedPipeline(base, record=opts.record, keep=opts.keep, backend=opts.backend,
                          strategy=opts.strategy, risk=opts.risk, extra=extra,
                          strategy_boot=recorded_strategy_boot(opts.target, opts.from_ns,
                                                               opts.to_ns)) as pipe:
        collector = DecisionCollector(pipe.cfg) if opts.verify else None
        client = BusClient(pipe.cfg)
        try:
            client.connect()
            reframer = Reframer()
            feed(client.publish_raw, sel.primers, speed=None, reframer=reframer)
            bar = ProgressBar(len(sel.records), opts.progress)
            barrier = DecisionBarrier(collector, expected) if collector is not None else None
            stats = feed(client.publish_raw, sel.records, speed=opts.speed, reframer=reframer,
                         progress=bar, barrier=barrier,
                         unpaced=EXECUTOR_TOPICS if opts.verify else ())
            bar.close()
            result = None
            if collector is not None:
                collector.settle(len(expected), opts.settle_s,
                                 timeout_s=opts.settle_s + 30.0)
                result = compare_decisions(expected, collector.decisions)
                result.notes = notes
        finally:
            client.close()
            if collector is not None:
                collector.close()
    return ReplayOutcome(stats, len(sel.primers), torn, result, notes)
