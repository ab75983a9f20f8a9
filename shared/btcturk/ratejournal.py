"""The rate journal: when this account last sent to each endpoint group, on disk.

BTCTurk counts requests per account and per IP in windows of up to a minute, and it
keeps counting across our restarts. A client that starts with an empty window after a
crash or a restart (exactly when recovery sends its burst of reads) can spend a quota
the previous incarnation already used and trip 429s. The journal lets the next
incarnation start from what was really sent.

Format: one small file of fixed size. A header (magic, then a digest of the account
identity and the limits table: another account or another table starts fresh), then per
endpoint group a ``blocked_until`` slot and a ring of ``max(capacity)`` send times, all
little-endian float64 wall-clock seconds. A group's last ``max(capacity)`` sends are all
its sliding windows can ever hold, so the ring loses nothing that matters.

Each send is one 8-byte ``pwrite`` at a fixed offset (a few microseconds, no fsync): the
write sits in the kernel's page cache, which survives the process being SIGKILLed. A power
loss can lose the last writes; the exchange's 429 with ``Retry-After`` is then the
backstop (the client honours it for the whole group).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from pathlib import Path

from loguru import logger

MAGIC = b"BBRATE01"
_DIGEST_LEN = 16
_HEADER = len(MAGIC) + _DIGEST_LEN
_F64 = struct.Struct("<d")

Limits = Mapping[str, list[tuple[int, float]]]


def _digest(identity: str, limits: Limits) -> bytes:
    table = ";".join(f"{g}={sorted(limits[g])}" for g in sorted(limits))
    return hashlib.sha256(f"{identity}\n{table}".encode()).digest()[:_DIGEST_LEN]


class RateJournal:
    """Send times per group, persisted. ``load()`` once, then ``record``/``block``."""

    def __init__(self, path: Path, identity: str, limits: Limits) -> None:
        self.path = path
        self._header = MAGIC + _digest(identity, limits)
        self._layout: dict[str, tuple[int, int]] = {}  # group -> (offset, ring slots)
        offset = _HEADER
        for group in sorted(limits):
            spec = limits[group]
            if not spec:
                continue
            slots = max(cap for cap, _ in spec)
            self._layout[group] = (offset, slots)
            offset += _F64.size * (1 + slots)
        self._size = offset
        self._cursor: dict[str, int] = {}
        self._fd: int | None = None
        self.write_errors = 0
        self.reset_reason: str | None = None  # why an existing file was not used
        self.open_error: str | None = None  # why there is no journal at all

    def load(self) -> dict[str, tuple[float, list[float]]]:
        """Open (creating it 0600 if missing) and return group -> (blocked_until, sends),
        wall seconds. A file of another account, another limits table or the wrong size
        is started afresh (``reset_reason`` says why)."""
        out: dict[str, tuple[float, list[float]]] = {}
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            raw = os.pread(self._fd, self._size + 1, 0)
        except OSError as exc:
            # Trading goes on, paced within this run; only the memory across restarts is
            # missing, and the exchange's Retry-After is the backstop. Said loudly.
            self.close()
            self.open_error = f"{type(exc).__name__}: {exc}"
            logger.error("rate journal {} unusable ({}): a restart will not remember "
                         "this run's requests", self.path, self.open_error)
            return out
        if raw and (len(raw) != self._size or not raw.startswith(self._header)):
            self.reset_reason = ("another account or limits table" if len(raw) == self._size
                                 else f"size {len(raw)}, expected {self._size}")
            logger.warning("rate journal {}: not used ({}); starting with empty windows",
                           self.path, self.reset_reason)
            raw = b""
        if not raw:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, self._header + bytes(self._size - _HEADER), 0)
            for group in self._layout:
                self._cursor[group] = 0
            return out
        for group, (offset, slots) in self._layout.items():
            values = [_F64.unpack_from(raw, offset + _F64.size * i)[0]
                      for i in range(1 + slots)]
            blocked, ring = values[0], values[1:]
            # Continue the ring at its oldest slot (a never-written slot is 0.0).
            self._cursor[group] = min(range(slots), key=lambda i: ring[i])
            out[group] = (blocked, sorted(t for t in ring if t > 0))
        return out

    def record(self, group: str, wall_s: float) -> None:
        place = self._layout.get(group)
        if place is None or self._fd is None:
            return
        offset, slots = place
        i = self._cursor[group]
        self._cursor[group] = (i + 1) % slots
        self._write(offset + _F64.size * (1 + i), wall_s)

    def block(self, group: str, until_wall_s: float) -> None:
        place = self._layout.get(group)
        if place is not None and self._fd is not None:
            self._write(place[0], until_wall_s)

    def _write(self, offset: int, value: float) -> None:
        assert self._fd is not None
        try:
            os.pwrite(self._fd, _F64.pack(value), offset)
        except OSError as exc:
            # Pacing in this process goes on unchanged; only the next start's memory of
            # this send is lost (and the exchange's Retry-After covers that).
            self.write_errors += 1
            if self.write_errors == 1:
                logger.error("rate journal {}: write failed ({}); a restart may not "
                             "remember this run's requests", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
