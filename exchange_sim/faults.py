"""Fault injection for the simulator (configured through POST /sim/faults).

HTTP kinds are evaluated per request: ``latency`` delays and continues; ``http_500`` and
``http_429`` answer before the request is processed; ``accept_then_drop`` and ``garbage``
let the request be processed (the order exists) and then break the answer. WS kinds act
on the connections open when the fault is posted, and on new connections while the fault
has time left (``duration_s``). ``frozen_book`` stops the book and its WS publication.
``clock_skew`` shifts the simulator's clock by ``offset_ms`` (server time, signature
stamps, timestamps) while it is active, as a drifting exchange or host clock would.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

HTTP_KINDS = {"latency", "http_500", "http_429", "accept_then_drop", "garbage"}
WS_KINDS = {"ws_drop", "ws_stall"}
BOOK_KINDS = {"frozen_book"}
CLOCK_KINDS = {"clock_skew"}
ALL_KINDS = HTTP_KINDS | WS_KINDS | BOOK_KINDS | CLOCK_KINDS


class FaultSpecError(ValueError):
    pass


@dataclass
class Fault:
    id: int
    kind: str
    path: str | None = None  # lower-cased prefix
    method: str | None = None  # upper-cased
    probability: float = 1.0
    count: int | None = None  # remaining uses; None = unlimited
    expires_mono: float | None = None
    latency_ms: float = 0.0
    offset_ms: float = 0.0  # clock_skew
    status: int = 500
    retry_after: float = 1.0
    mode: str = "hold"  # accept_then_drop: "hold" (until client gives up) or "close"
    hold_s: float = 30.0
    symbols: list[str] | None = None
    body: str = "<html><body>502 Bad Gateway</body></html>{"
    spec: dict[str, Any] = field(default_factory=dict)

    def alive(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.expires_mono is None or now < self.expires_mono

    def matches(self, method: str, path: str) -> bool:
        if self.path is not None and not path.startswith(self.path):
            return False
        return self.method is None or self.method == method


def _num(spec: dict[str, Any], key: str, default: float) -> float:
    value = spec.get(key, default)
    # Admin bodies are decoded with JSON floats as Decimal; timings are fine as floats.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise FaultSpecError(f"{key} must be a number")
    return float(value)


def parse_fault(spec: dict[str, Any], fault_id: int) -> Fault:
    if not isinstance(spec, dict):
        raise FaultSpecError("a fault is a JSON object")
    kind = spec.get("kind")
    if kind not in ALL_KINDS:
        raise FaultSpecError(f"kind must be one of {sorted(ALL_KINDS)}")
    probability = _num(spec, "probability", 1.0)
    if not 0.0 <= probability <= 1.0:
        raise FaultSpecError("probability must be within 0..1")
    count = spec.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise FaultSpecError("count must be a non-negative integer")
    duration = spec.get("duration_s")
    symbols = spec.get("symbols", spec.get("symbol"))
    if isinstance(symbols, str):
        symbols = [symbols]
    return Fault(
        id=fault_id,
        kind=kind,
        path=str(spec["path"]).lower().rstrip("/") if spec.get("path") else None,
        method=str(spec["method"]).upper() if spec.get("method") else None,
        probability=probability,
        count=count,
        expires_mono=time.monotonic() + _num(spec, "duration_s", 0) if duration else None,
        latency_ms=_num(spec, "latency_ms", _num(spec, "ms", 0.0)),
        offset_ms=_num(spec, "offset_ms", 0.0),
        status=int(_num(spec, "status", 500)),
        retry_after=_num(spec, "retry_after", 1.0),
        mode=str(spec.get("mode", "hold")),
        hold_s=_num(spec, "hold_s", 30.0),
        symbols=[s.replace("_", "").upper() for s in symbols] if symbols else None,
        body=str(spec.get("body", Fault.body)),
        spec=spec,
    )


class FaultRegistry:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed ^ 0x5EED)
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        fault = parse_fault(spec, next(self._ids))
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def _prune(self) -> float:
        now = time.monotonic()
        self.faults = [f for f in self.faults if f.alive(now)]
        return now

    def http_faults(self, method: str, path: str) -> list[Fault]:
        """Faults that fire for this request (probability rolled, count consumed)."""
        if not self.faults:
            return []
        self._prune()
        fired = []
        for fault in self.faults:
            if fault.kind not in HTTP_KINDS or not fault.matches(method, path):
                continue
            if fault.probability < 1.0 and self.rng.random() >= fault.probability:
                continue
            if fault.count is not None:
                fault.count -= 1
            fired.append(fault)
        return fired

    def active(self, kind: str) -> list[Fault]:
        if not self.faults:
            return []
        self._prune()
        return [f for f in self.faults if f.kind == kind]

    def clock_offset_ms(self) -> int:
        """The sum of the active ``clock_skew`` faults (0 without any)."""
        return int(sum(f.offset_ms for f in self.active("clock_skew")))

    def frozen(self, symbol: str) -> bool:
        return any(f.symbols is None or symbol in f.symbols for f in self.active("frozen_book"))

    def describe(self) -> list[dict[str, Any]]:
        self._prune()
        return [{"id": f.id, "remaining": f.count, **f.spec} for f in self.faults]
