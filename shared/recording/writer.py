"""Appending records to segment files: the recorder's hot path.

The open segment is held under an exclusive ``flock`` for as long as it is open, taken
before its header is written. That lock is how every other party (the recorder's own
housekeeping thread, ``recordings compress`` / ``prune`` run by an operator while the
bot records) tells the open segment from a closed one without guessing from names or
times: a segment that cannot be locked is being written and is never compressed or
deleted. The kernel drops the lock when the process dies, so a SIGKILLed recorder's
last segment becomes "closed" by itself.
"""

from __future__ import annotations

import fcntl
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.files import ensure_private_dir
from shared.recording.format import _CONTENT, _FRAME, encode_header, segment_name
from shared.recording.index import SegmentIndex, write_index


class SegmentWriter:
    """Appends records to segment files in ``directory``, rotating by size and age.

    Writes are buffered in memory and handed to the kernel by ``flush()`` (os.write,
    no fsync): a killed process loses only what was appended since its last flush, and
    since the file is only appended to, records already flushed stay intact. A record
    is never split across two segments.

    When a segment closes (rotation, ``close()``) its index is written beside it and
    ``on_closed(path)`` is called, e.g. to queue it for compression."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        schema_version: int,
        max_bytes: int = 64 * 1024 * 1024,
        max_s: float = 3600.0,
        meta: dict[str, Any] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        on_closed: Callable[[Path], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        ensure_private_dir(self.directory)
        self.schema_version = schema_version
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_s * 1e9)
        self.meta = meta or {}
        self.on_closed = on_closed
        self._clock_ns = clock_ns
        self._buf = bytearray()
        self._fd = -1
        self.path: Path | None = None
        self.start_ns = 0
        self._size = 0  # bytes written to the current file, header included
        # Where the last complete flush ended: _size also counts a partial write.
        self._flushed_size = 0
        self._header_size = 0
        self.segments = 0  # segments opened by this writer
        self.records = 0
        self.bytes = 0
        self.oldest_unflushed_ns = 0  # receive time of the first record in the buffer
        self.last_flush_lag_ms = 0
        # The open segment's index, kept as records arrive (what close() writes out).
        self._seg_records = 0
        self._seg_flushed = 0  # of those, how many reached the file
        self._first_ns = 0
        self._last_ns = 0
        self._last_flushed_ns = 0
        self._topics: dict[bytes, int] = {}
        self._unflushed_topics: dict[bytes, int] = {}

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    # The hot path: no method calls beyond the unavoidable ones.
    def append(self, recv_ns: int, topic: bytes, payload: bytes | memoryview) -> None:
        # The record's content before its payload, as one small bytes: one crc32 and
        # one buffer append fewer per record than head and topic apart.
        head = _CONTENT.pack(recv_ns, len(topic)) + topic
        content_len = len(head) + len(payload)
        frame_len = _FRAME.size + content_len
        if self._fd < 0:
            self._open(recv_ns)
        elif self._size + len(self._buf) + frame_len > self.max_bytes and (
            self._size + len(self._buf) > self._header_size
        ):
            self.rotate(recv_ns)
        elif recv_ns - self.start_ns >= self.max_age_ns:
            self.rotate(recv_ns)
        if not self._buf:
            self.oldest_unflushed_ns = recv_ns
        buf = self._buf
        buf += _FRAME.pack(content_len, zlib.crc32(payload, zlib.crc32(head)))
        buf += head
        buf += payload
        self.records += 1
        self.bytes += frame_len
        self._seg_records += 1
        if not self._first_ns:
            self._first_ns = recv_ns
        self._last_ns = recv_ns
        t = self._unflushed_topics
        t[topic] = t.get(topic, 0) + 1

    def flush(self, now_ns: int | None = None) -> None:
        """Hand the buffer to the kernel. On OSError (ENOSPC, EIO) the buffer is kept
        and the file may hold part of it: call ``abandon()``, which cuts it off."""
        if not self._buf:
            return
        now_ns = self._clock_ns() if now_ns is None else now_ns
        self.last_flush_lag_ms = max(0, (now_ns - self.oldest_unflushed_ns) // 1_000_000)
        view = memoryview(self._buf)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        finally:
            view.release()
            self._size += written
        self._flushed_size = self._size
        self._buf.clear()
        self._seg_flushed = self._seg_records
        self._last_flushed_ns = self._last_ns
        topics = self._topics
        for k, v in self._unflushed_topics.items():
            topics[k] = topics.get(k, 0) + v
        self._unflushed_topics.clear()

    def rotate(self, now_ns: int | None = None) -> None:
        self.flush()
        self._close_file()
        self._open(self._clock_ns() if now_ns is None else now_ns)

    def close(self) -> None:
        self.flush()
        self._close_file()

    def abandon(self) -> int:
        """After a failed write: drop the unflushed records, cut the file back to its
        last complete record (a partial write would otherwise end the readable part of
        the segment for every later record), close it. Returns the records dropped.
        Never raises: the disk that failed may fail again."""
        dropped = self._seg_records - self._seg_flushed
        self._buf.clear()
        self._unflushed_topics.clear()
        self._seg_records = self._seg_flushed
        if self._fd >= 0:
            if not self._seg_flushed:
                # Nothing of it reached the disk: leave no header-only segment behind
                # (one per retry on a full disk would pile up).
                os.close(self._fd)
                self._fd = -1
                if self.path is not None:
                    self.path.unlink(missing_ok=True)
                return dropped
            try:
                os.ftruncate(self._fd, self._flushed_size)
            except OSError:
                pass  # the reader will report the torn tail instead
            self._close_file(index_errors_ok=True)
        return dropped

    def start_segment(self, start_ns: int | None = None) -> None:
        """Open a new segment now (after a write error: proves the disk takes writes
        again). Closes the current one first if there is one."""
        if self._fd >= 0:
            self.rotate(start_ns)
        else:
            self._open(self._clock_ns() if start_ns is None else start_ns)

    def _close_file(self, index_errors_ok: bool = False) -> None:
        if self._fd < 0:
            return
        path = self.path
        os.close(self._fd)  # releases the flock: the segment is closed for everyone
        self._fd = -1
        assert path is not None
        index = SegmentIndex(
            segment=path.name, start_ns=self.start_ns,
            first_ns=self._first_ns if self._seg_flushed else 0,
            last_ns=self._last_flushed_ns if self._seg_flushed else 0, records=self._seg_flushed,
            topics={k.decode("utf-8", "replace"): v for k, v in sorted(self._topics.items())},
            content_bytes=self._flushed_size, schema_version=self.schema_version,
        )
        try:
            write_index(path, index)
        except OSError:
            if not index_errors_ok:
                raise
        if self.on_closed is not None:
            self.on_closed(path)

    def _open(self, start_ns: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        while True:
            path = self.directory / segment_name(start_ns)
            try:
                fd = os.open(path, flags, 0o600)
                break
            except FileExistsError:
                start_ns += 1  # two segments in the same ns: keep names unique and ordered
        try:
            # Locked before the header exists: whoever finds an unlocked, header-less
            # file knows it is not a segment being started (see the module docstring).
            fcntl.flock(fd, fcntl.LOCK_EX)
            header = encode_header(self.schema_version, start_ns, self.meta)
            if os.write(fd, header) != len(header):  # at once: never without its header
                raise OSError(28, "short write of a segment header")
        except OSError:
            os.close(fd)
            try:
                os.unlink(path)  # an empty or half-headed file is not a segment
            except OSError:
                pass
            raise
        self._fd, self.path, self.start_ns = fd, path, start_ns
        self._size = self._header_size = self._flushed_size = len(header)
        self.segments += 1
        self._seg_records = self._seg_flushed = 0
        self._first_ns = self._last_ns = self._last_flushed_ns = 0
        self._topics = {}
        self._unflushed_topics = {}
