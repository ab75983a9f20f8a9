"""Latch requests that could not reach the executor, kept for its next start.

The executor's DB is the one writer of latches. When the executor cannot be reached (it
is down, restarting, or given up on), the supervisor writes the request here instead
(``data/pending-latches.json``, atomic, 0600); the executor applies every pending
request, in order, before anything else on its next start, and then removes the file.
Until then ``status`` shows the latch as pending-persist (and never TRADING while a
pending request closes a gate).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec

from shared.files import ensure_private_dir, write_private_file

FILE_NAME = "pending-latches.json"
LATCHES = ("kill_switch", "safety_latch", "paused")


class PendingLatch(msgspec.Struct, frozen=True):
    latch: str
    value: bool
    reason: str
    at: float


def path_in(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def load(path: Path) -> list[PendingLatch]:
    """The pending requests, oldest first ([] when none). A file that cannot be read is
    an error (the caller fails closed), never silently ignored."""
    if not path.exists():
        return []
    raw: Any = json.loads(path.read_bytes() or b"[]")
    out = msgspec.convert(raw, list[PendingLatch])
    bad = [p.latch for p in out if p.latch not in LATCHES]
    if bad:
        raise ValueError(f"{path}: unknown latch(es) {bad}")
    return out


def append(path: Path, latch: str, value: bool, reason: str, now: float | None = None) -> None:
    if latch not in LATCHES:
        raise ValueError(f"unknown latch {latch!r}")
    ensure_private_dir(path.parent)
    items = load(path)
    items.append(PendingLatch(latch, value, reason, time.time() if now is None else now))
    write_private_file(path, msgspec.json.encode(items))


def effective(items: list[PendingLatch]) -> dict[str, PendingLatch]:
    """The last request per latch (what the executor will end up with)."""
    out: dict[str, PendingLatch] = {}
    for item in items:
        out[item.latch] = item
    return out
