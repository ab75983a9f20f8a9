"""``replay --verify``: each of strategy and risk is re-run on exactly the recorded
inputs, and what it decides is compared with what it decided then.

Why this is exact (docs/recordings.md, "Deterministic replay"): every input of a
strategy or risk decision is a bus message (market data, the bus clock's ticks,
executor snapshots and events, the intents risk judges where they come on the bus, the
decisions the strategy applies where they come on the bus, controls), every subscriber
gets the proxy's one order, and the recorder records that order. The replay feeds
those records in that order to the pipeline's strategy and risk (``replay.verify``):
each starts taking input where the recorded one did (``ReplayStart`` at its recorded
``joined_hb_seq``), the strategy applies the *recorded* decisions and risk judges the
*recorded* intents, so neither depends on the other's timing, and both publish what they
decide under ``verify.`` instead of acting on it. Speed changes nothing but how long it
takes: no barrier, no wait.

The comparison is per intent id (deterministic ids): for each decision and intent,
which field changed, old -> new.
"""

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
from bus.messages import (
    Control,
    Envelope,
    Heartbeat,
    Intent,
    Packet,
    ReplayStart,
    RiskDecision,
    RiskInfo,
    packet_decoder,
    packet_encoder,
)
from bus.roles import REPLAY
from shared.config import Config
from shared.recording import Record, SegmentReader, read_recording, segment_paths

VERIFIED_ACTORS = ("strategy", "risk")
REPLAY_CONTROL = "replay.control"  # recorded controls, as a verify pipeline takes them
DECISION_FIELDS = ("verdict", "reasons", "price", "quantity")
INTENT_FIELDS = ("side", "price", "quantity", "reason", "created_wall_ns")


@dataclass
class VerifyResult:
    expected: int = 0  # recorded decisions
    replayed: int = 0
    matched: int = 0
    intents_expected: int = 0
    intents_replayed: int = 0
    intents_matched: int = 0
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def _value(x: Any) -> Any:
    if isinstance(x, Decimal):
        return x.normalize() if x else Decimal(0)  # 1.0 and 1 are the same quantity
    if isinstance(x, list | tuple):
        return tuple(x)
    return x


def _show(x: Any) -> str:
    if isinstance(x, Decimal):
        return format(x, "f")
    if isinstance(x, list | tuple):
        return "[" + ", ".join(map(str, x)) + "]"
    return str(x)


def _compare(kind: str, fields: Sequence[str], recorded: Sequence[Any],
             replayed: Sequence[Any]) -> tuple[int, list[str]]:
    """Match by intent_id, and per id in order (an intent re-sent after a rejection is
    decided again). Returns (identical count, readable differences)."""
    want: dict[str, list[Any]] = defaultdict(list)
    got: dict[str, list[Any]] = defaultdict(list)
    symbol: dict[str, str] = {}
    for x in recorded:
        want[x.intent_id].append(x)
        symbol[x.intent_id] = x.symbol
    for x in replayed:
        got[x.intent_id].append(x)
        symbol.setdefault(x.intent_id, x.symbol)
    matched = 0
    out: list[str] = []

    def brief(x: Any) -> str:
        return " ".join(f"{f}={_show(getattr(x, f))}" for f in fields)

    for iid in list(want) + [i for i in got if i not in want]:
        w, g = want.get(iid, []), got.get(iid, [])
        for n in range(max(len(w), len(g))):
            label = f"{kind} {iid} ({symbol[iid]})" + (f" #{n + 1}" if n else "")
            if n >= len(g):
                out.append(f"missing in replay: {label}: recorded {brief(w[n])}")
            elif n >= len(w):
                out.append(f"extra in replay: {label}: replayed {brief(g[n])}")
            else:
                changed = [f"{f} {_show(getattr(w[n], f))} -> {_show(getattr(g[n], f))}"
                           for f in fields
                           if _value(getattr(w[n], f)) != _value(getattr(g[n], f))]
                if changed:
                    out.append(f"differs: {label}: " + "; ".join(changed))
                else:
                    matched += 1
    return matched, out


def compare_decisions(recorded: Sequence[RiskDecision], replayed: Sequence[RiskDecision],
                      recorded_intents: Sequence[Intent] = (),
                      replayed_intents: Sequence[Intent] = ()) -> VerifyResult:
    """Decisions (verdict, reasons, price, quantity) and intents (side, price, quantity,
    reason, message clock) per intent id; the executor's status is not compared (the
    replay's executor only mirrors)."""
    res = VerifyResult(expected=len(recorded), replayed=len(replayed),
                       intents_expected=len(recorded_intents),
                       intents_replayed=len(replayed_intents))
    res.intents_matched, idiff = _compare("intent", INTENT_FIELDS, recorded_intents,
                                          replayed_intents)
    res.matched, ddiff = _compare("decision", DECISION_FIELDS, recorded, replayed)
    # An intent's difference explains its decision's: it comes first.
    res.differences = idiff + ddiff
    return res


def _decode(rec: Record) -> Packet | None:
    try:
        return packet_decoder.decode(rec.payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_decisions(records: Iterable[Record]) -> list[RiskDecision]:
    """Risk's decisions (a strategy's own stand-in for an unreachable risk is not one)."""
    out = []
    for rec in records:
        p = _decode(rec)
        if p is not None and isinstance(p.body, RiskDecision) and p.env.source == "risk":
            out.append(p.body)
    return out


def decode_intents(records: Iterable[Record]) -> list[Intent]:
    out = []
    for rec in records:
        p = _decode(rec)
        if p is not None and isinstance(p.body, Intent):
            out.append(p.body)
    return out


def verify_feed(records: Sequence[Record], starts: Sequence[Record]
                ) -> tuple[list[Record], list[Record]]:
    """What to feed, as (first, rest): ``first`` goes before the primers, ``rest`` is
    ``records`` (in recorded order, with heartbeats) without the heartbeats, each
    ``ReplayStart`` of ``starts`` in place of the recorded heartbeat it stands for
    (same recv_ns and topic, see ``start_points``). An actor whose start is not in the
    window began before it: its ReplayStart is in ``first``, so it takes the primers
    too. Recorded controls travel on ``replay.control`` (the replay identity may not
    publish ``control``, bus/roles.py; a verify pipeline's strategy and risk take them
    from there), ``shutdown`` left out: the pipeline must not stop."""
    at = {(s.recv_ns, s.topic): s for s in starts}
    out: list[Record] = []
    for rec in records:
        if rec.topic.startswith("hb."):
            start = at.pop((rec.recv_ns, rec.topic), None)
            if start is not None:
                out.append(Record(rec.recv_ns, "replay.start", start.payload))
            continue
        if rec.topic == "control":
            p = _decode(rec)
            if p is None or not isinstance(p.body, Control) or p.body.command == "shutdown":
                continue
            out.append(Record(rec.recv_ns, REPLAY_CONTROL, rec.payload))
            continue
        out.append(rec)
    return [Record(r.recv_ns, "replay.start", r.payload) for r in at.values()], out


def recorded_risk_day(records: Sequence[Record], starts: Sequence[Record]
                      ) -> tuple[int, Decimal, bool] | None:
    """The daily-loss baseline the recorded risk held when it began to take input (a
    risk restarted mid-day restores it from data/risk.day, which is not in the
    recording): its heartbeat at its starting point says it (RiskInfo day,
    day_start_net, day_marked). None: no baseline then (or no such heartbeat)."""
    where = {(s.recv_ns, s.topic) for s in starts if s.topic == "hb.risk" and s.recv_ns >= 0}
    for rec in records:
        if rec.topic != "hb.risk":
            continue
        p = _decode(rec)
        if p is None or not isinstance(p.body, Heartbeat) or p.env.source != "risk":
            continue
        info = p.body.info
        if (rec.recv_ns, rec.topic) in where or not where:
            if isinstance(info, RiskInfo) and info.day >= 0:
                return info.day, info.day_start_net, info.day_marked
            return None
    return None


def start_points(records: Sequence[Record]) -> tuple[list[Record], list[str]]:
    """Where the recorded strategy and risk began to take input: the heartbeat of their
    own that first came back through the bus (its seq is their ``joined_hb_seq``
    counter). Returns one placeholder Record per actor (recv_ns and topic of that
    heartbeat, payload a ReplayStart) and notes (a restart inside the window)."""
    first_incarnation: dict[str, str] = {}
    joined_seq: dict[str, int] = {}
    beats: dict[tuple[str, str, int], Record] = {}
    restarted: dict[str, int] = {}
    for rec in records:
        if not rec.topic.startswith("hb."):
            continue
        p = _decode(rec)
        if p is None or not isinstance(p.body, Heartbeat):
            continue
        actor = p.body.actor
        if actor not in VERIFIED_ACTORS or p.env.source != actor:
            continue
        inc = first_incarnation.setdefault(actor, p.env.incarnation)
        if inc != p.env.incarnation:
            restarted.setdefault(actor, rec.recv_ns)
            continue
        beats[(actor, inc, p.env.seq)] = rec
        seq = p.body.counters.get("joined_hb_seq", 0)
        if seq and actor not in joined_seq:
            joined_seq[actor] = seq
    starts = []
    for actor in VERIFIED_ACTORS:
        payload = packet_encoder.encode(Packet(Envelope(1, "replay", "replay", 0, 0, 0),
                                               ReplayStart(actor=actor)))
        beat = beats.get((actor, first_incarnation.get(actor, ""), joined_seq.get(actor, -1)))
        # Not found (it joined before the window): a placeholder that matches nothing,
        # so verify_feed puts it first.
        starts.append(Record(beat.recv_ns, beat.topic, payload) if beat is not None
                      else Record(-1, f"hb.{actor}", payload))
    notes = [f"{actor} restarted in the window at "
             f"{time.strftime('%H:%M:%S', time.gmtime(ns / 1e9))} UTC: its decisions after "
             "that start from a fresh state the replay does not reproduce"
             for actor, ns in sorted(restarted.items())]
    return starts, notes


class OutputCollector:
    """What the replay's strategy and risk publish under ``verify.``, gathered by a
    background thread."""

    def __init__(self, cfg: Config) -> None:
        self.decisions: list[RiskDecision] = []
        self.intents: list[Intent] = []
        self.last_mono = time.monotonic()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 1_000_000)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"verify.")
        load_for(cfg.data_path, REPLAY).client(self._sock, "bus")
        self._sock.connect(cfg.bus_sub_endpoint)
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="verify")
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
            with self._lock:
                if isinstance(body, RiskDecision):
                    self.decisions.append(body)
                elif isinstance(body, Intent):
                    self.intents.append(body)
                else:
                    continue
                self.last_mono = time.monotonic()

    def settle(self, decisions: int, intents: int, quiet_s: float, timeout_s: float) -> None:
        """Wait until the pipeline has gone quiet: nothing new for ``quiet_s`` and at
        least as many decisions and intents as recorded (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                enough = len(self.decisions) >= decisions and len(self.intents) >= intents
                idle = time.monotonic() - self.last_mono
            # All there: a short quiet (extras would be differences, and come at once);
            # fewer: the full quiet time before calling them missing.
            if idle >= (min(0.5, quiet_s) if enough else quiet_s):
                return
            time.sleep(0.02)

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


def recorded_intents(
    target: str | os.PathLike[str], from_ns: int | None, to_ns: int | None
) -> list[Intent]:
    return decode_intents(read_recording(target, ["intent."], from_ns, to_ns))
