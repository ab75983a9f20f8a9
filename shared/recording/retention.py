"""Which segments retention removes (pure: facts and a time in, a plan out).

Rules, in this order:
- by age: a closed segment whose newest record is older than ``retain_days`` goes
  (a segment is removed whole, so it goes only once *all* its records are too old);
- by size: while the recordings' total size on disk exceeds ``retain_bytes``, the
  oldest remaining closed segment goes.
The open segment is never removed, whatever the limits say: it is what the recorder is
writing, and the limits are met again after its next rotation. 0 disables a rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

DAY_NS = 86_400 * 1_000_000_000


class Facts(Protocol):
    @property
    def first_ns(self) -> int: ...
    @property
    def last_ns(self) -> int: ...
    @property
    def disk_bytes(self) -> int: ...
    @property
    def is_open(self) -> bool: ...


@dataclass(frozen=True)
class Removal:
    segment: Facts
    reason: Literal["age", "size"]


def plan_retention(
    segments: Sequence[Facts], now_ns: int, retain_days: float, retain_bytes: int
) -> list[Removal]:
    """``segments`` oldest first (the directory's order)."""
    plan: list[Removal] = []
    kept: list[Facts] = []
    cutoff = now_ns - int(retain_days * DAY_NS) if retain_days > 0 else None
    for s in segments:
        newest = max(s.first_ns, s.last_ns)
        if cutoff is not None and not s.is_open and newest < cutoff:
            plan.append(Removal(s, "age"))
        else:
            kept.append(s)
    if retain_bytes > 0:
        total = sum(s.disk_bytes for s in kept)
        for s in kept:
            if total <= retain_bytes:
                break
            if s.is_open:
                continue
            plan.append(Removal(s, "size"))
            total -= s.disk_bytes
    return plan
