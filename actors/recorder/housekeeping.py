"""The recorder's background housekeeping: compress segments as they close, apply
retention, and keep the usage figures the heartbeat reports.

It runs in its own thread so the hot loop never waits for zstd or a directory scan:
the hot loop only hands over the path of a segment it just closed (``closed()``, a
queue put). Every ``interval_s`` (and after each hand-over) it also sweeps: compresses
any closed segment still uncompressed (one left by a crash, or by a failure to
compress earlier), prunes by age and size, and re-measures. A failure (ENOSPC while
compressing, say) is logged and counted and never stops the recorder: the original
segment is intact and the next sweep tries again.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from shared.recording.maintenance import Usage, compress_closed, dir_bytes, prune, usage


class Housekeeper:
    def __init__(
        self,
        directory: Path,
        *,
        compress: bool,
        level: int,
        retain_days: float,
        retain_bytes: int,
        interval_s: float,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self.compress = compress
        self.level = level
        self.retain_days = retain_days
        self.retain_bytes = retain_bytes
        self.interval_s = interval_s
        self._clock_ns = clock_ns
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Read by the heartbeat without locks (plain ints and one object swap).
        self.compressed = 0
        self.compressed_saved_bytes = 0
        self.compress_errors = 0
        self.pruned = 0
        self.pruned_bytes = 0
        self.errors = 0
        self.last_error = ""
        self.usage: Usage | None = None  # None until the first sweep measured it
        self.total_bytes = 0  # the whole directory, leftovers and indexes included

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
        self._thread.start()

    def closed(self, path: Path) -> None:
        """The writer closed ``path`` (called from the hot loop: must stay cheap)."""
        self._queue.put(path)

    def stop(self, timeout_s: float) -> bool:
        """Stop the thread after one last sweep (the segment closed at stop gets
        compressed); False if it did not finish in time. Interrupting it is safe:
        compression is crash-safe and the next start completes it."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        # On Linux a thread has its own nice value: compression yields the CPU to the
        # hot loop (and to the rest of the bot) instead of competing with it.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while True:
            self.sweep()
            if self._stop.is_set():
                return
            try:
                self._queue.get(timeout=self.interval_s)
            except queue.Empty:
                pass

    def sweep(self) -> None:
        """One pass: compress, prune, measure. Never raises."""
        if self.compress:
            try:
                for c in compress_closed(self.directory, self.level):
                    self.compressed += 1
                    self.compressed_saved_bytes += c.before - c.after
            except OSError as exc:
                self.compress_errors += 1
                self._note(f"compress: {exc}")
        now = self._clock_ns()
        try:
            removed = prune(self.directory, now, self.retain_days, self.retain_bytes)
            self.pruned += len(removed)
            self.pruned_bytes += sum(r.segment.disk_bytes for r in removed)
            self.usage = usage(self.directory, now)
            self.total_bytes = dir_bytes(self.directory)
        except OSError as exc:
            self._note(f"retention/usage: {exc}")

    def _note(self, what: str) -> None:
        self.errors += 1
        self.last_error = what
        logger.error("recorder housekeeping: {}", what)
