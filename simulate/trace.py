"""The event trace: every message, request, venue call and fault, in order, hashed.

Two runs of one seed on one commit must give the same trace byte for byte; the hash
(``trace_hash``) says so cheaply. Heartbeats are traced by topic only: their payload
carries the process id, which is not part of the simulated world; the run's temporary
directory is written as ``<dir>``. The last events are
kept readable for a violation's report.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable

RECENT = 40
HASH_BATCH = 1 << 16  # bytes


class Trace:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        # The run's temporary directory, which messages may name (a DB path in a halt
        # reason): the trace writes it as "<dir>", so runs in different directories match.
        self.mask = b""
        self._hash = hashlib.blake2b(digest_size=16)
        # Bytes not hashed yet: hashing is a stream (update(a); update(b) is
        # update(a + b)), so events are hashed a batch at a time, not two calls each.
        self._pending = bytearray()
        self.recent: deque[tuple[float, str, str, str, int]] = deque(maxlen=RECENT)
        self.events = 0

    def add(self, kind: str, who: str, what: str, payload: bytes) -> None:
        t = self._now()
        if what.startswith("hb."):
            payload = b""
        elif self.mask and self.mask in payload:
            payload = payload.replace(self.mask, b"<dir>")
        self.events += 1
        pending = self._pending
        pending += f"{t:.9f}|{kind}|{who}|{what}|{len(payload)}|".encode()
        pending += payload
        if len(pending) > HASH_BATCH:
            self._hash.update(pending)
            pending.clear()
        self.recent.append((t, kind, who, what, len(payload)))

    def note(self, kind: str, who: str, what: str) -> None:
        self.add(kind, who, what, b"")

    def hexdigest(self) -> str:
        self._hash.update(self._pending)
        self._pending.clear()
        return self._hash.hexdigest()

    def last(self, n: int = 20) -> list[str]:
        return [f"t={t:.3f}s {kind} {who} {what}" + (f" ({size} B)" if size else "")
                for t, kind, who, what, size in list(self.recent)[-n:]]
