"""``replay --verify``: collect the decisions the replayed pipeline makes and compare
them with the recorded ones, in causal lock-step with the feed (``DecisionBarrier``)."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import zmq

from bus.auth import load_for
from bus.messages import Intent, OrderEvent, PortfolioSnapshot, RiskDecision, packet_decoder
from bus.roles import REPLAY
from shared.config import Config
from shared.recording import Record, SegmentReader, read_recording, segment_paths

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
        load_for(cfg.data_path, REPLAY).client(self._sock, "bus")
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
