"""Reading one segment, compressed or not: records, torn tails, a summary.

An uncompressed segment is read through a read-only mmap (no copy of the file); a
compressed one is decompressed into memory first (a segment is at most
``recorder.segment_max_bytes``, 64 MiB by default, and zstd decompresses at several
hundred MB/s, so this is the cheap way to give both forms the same parser).
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from shared.recording.format import (
    _CONTENT,
    _FRAME,
    _HEADER,
    MAGIC,
    MAX_CONTENT,
    Header,
    ReadReport,
    Record,
    RecordingError,
    decode_header,
    is_compressed,
    iter_frames,
)

_CHUNK = 1 << 16  # small reads: a damaged frame still yields the blocks before it


@dataclass
class SegmentInfo:
    path: str
    format_version: int = 0
    schema_version: int = 0
    start_ns: int = 0
    end_ns: int = 0  # last record's receive time (start_ns if empty)
    first_ns: int = 0  # first record's receive time (0 if empty)
    records: int = 0
    size: int = 0  # bytes of the segment itself (decompressed)
    disk_bytes: int = 0  # bytes the file takes on disk (compressed or not)
    compressed: bool = False
    topics: dict[str, int] = field(default_factory=dict)  # per top-level topic
    full_topics: dict[str, int] = field(default_factory=dict)  # per exact topic
    torn_tail: bool = False
    bytes_skipped: int = 0
    tail_reason: str = ""
    error: str = ""  # the file is not a readable segment at all
    meta: dict[str, Any] = field(default_factory=dict)


def decompress_file(path: str | os.PathLike[str]) -> tuple[bytes, str]:
    """The decompressed bytes of a compressed segment, and "" or why they end early.

    Our compressor writes one frame that declares its content size, so the fast path is
    a single allocation. A damaged file (disk corruption: our own writer never exposes
    a partial one) is decompressed again in small steps, yielding what came before the
    damage, so the parser reports a torn tail there instead of losing the segment."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return zstandard.ZstdDecompressor().decompress(data), ""
    except zstandard.ZstdError:
        pass
    out = bytearray()
    problem = ""
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    try:
        while chunk := reader.read(_CHUNK):
            out += chunk
    except zstandard.ZstdError as exc:
        problem = f"compressed data damaged: {exc}"
    if not problem:  # whole after all (e.g. a frame without a content size)
        return bytes(out), ""
    return bytes(out), problem


def read_head(path: str | os.PathLike[str], n: int) -> bytes:
    """The first ``n`` bytes of a segment's content, decompressing only what it takes."""
    with open(path, "rb") as f:
        if not is_compressed(path):
            return f.read(n)
        reader = zstandard.ZstdDecompressor().stream_reader(f)
        out = bytearray()
        try:
            while len(out) < n and (chunk := reader.read(n - len(out))):
                out += chunk
        except zstandard.ZstdError:
            pass
        return bytes(out)


def content_size(path: str | os.PathLike[str]) -> int:
    """The segment's own size in bytes: the file size, or for a compressed segment the
    content size its zstd frame header declares (-1 when it does not)."""
    if not is_compressed(path):
        return os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(18)  # the longest zstd frame header
    try:
        return zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return -1


def start_of(path: Path) -> int:
    """A segment's start time from its header (0 if unreadable)."""
    try:
        head = read_head(path, _HEADER.size)
    except OSError:
        return 0
    if len(head) < _HEADER.size:
        return 0
    magic, _, _, start_ns, _ = _HEADER.unpack(head)
    return start_ns if magic == MAGIC else 0


class SegmentReader:
    """Reads one segment, compressed or not.

    ``records()`` yields complete records only; ``report`` says afterwards whether a
    torn tail was skipped. A segment still being written may show a "torn" tail that is
    really a record in flight; it is read in full once the writer has flushed it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.report = ReadReport()
        self.compressed = is_compressed(self.path)
        self.problem = ""  # why a compressed segment's content ended early
        self._buf: bytes | mmap.mmap
        if self.compressed:
            self._buf, self.problem = decompress_file(self.path)
        else:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    self._buf = b""
                else:
                    self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self.header: Header = decode_header(self._buf)
        except RecordingError as exc:
            self.close()
            if self.problem:
                raise RecordingError(f"{exc} ({self.problem})") from None
            raise

    @property
    def size(self) -> int:
        return len(self._buf)

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()
        self._buf = b""

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _finish(self, report: ReadReport, off: int, reason: str) -> None:
        end = len(self._buf)
        report.valid_bytes = off
        if off < end:
            report.torn_tail, report.bytes_skipped, report.tail_reason = True, end - off, reason
        elif self.problem:
            # The decompressed content stopped at a damaged frame: whatever followed it
            # is unknown, so say so rather than presenting the segment as whole.
            report.torn_tail, report.tail_reason = True, self.problem

    def records(
        self,
        topics: Iterable[str] | None = None,
        from_ns: int | None = None,
        to_ns: int | None = None,
    ) -> Iterator[Record]:
        """Complete records, optionally filtered by topic prefix and by receive time
        (``from_ns <= recv_ns <= to_ns``)."""
        self.report = report = ReadReport()
        buf = self._buf
        prefixes = tuple(p.encode() for p in topics) if topics else None
        lo = from_ns if from_ns is not None else -(2**63)
        hi = to_ns if to_ns is not None else 2**63
        # iter_frames inlined: this loop bounds replay --max, so no generator-per-layer.
        end = len(buf)
        off = self.header.size
        unpack_frame, unpack_content = _FRAME.unpack_from, _CONTENT.unpack_from
        crc32 = zlib.crc32
        fsize, csize = _FRAME.size, _CONTENT.size
        reason = ""
        while off < end:
            if off + fsize > end:
                reason = "short frame header"
                break
            length, crc = unpack_frame(buf, off)
            body = off + fsize
            if length < csize or length > MAX_CONTENT:
                reason = f"impossible record length {length}"
                break
            nxt = body + length
            if nxt > end:
                reason = "short record"
                break
            if crc32(buf[body:nxt]) != crc:
                reason = "checksum mismatch"
                break
            recv_ns, topic_len = unpack_content(buf, body)
            t0 = body + csize
            t1 = t0 + topic_len
            if t1 > nxt:
                reason = "topic length beyond record"
                break
            off = nxt
            report.records += 1
            if recv_ns < lo or recv_ns > hi:
                continue
            topic = buf[t0:t1]
            if prefixes is not None and not topic.startswith(prefixes):
                continue
            yield Record(recv_ns, topic.decode("utf-8", "replace"), buf[t1:nxt])
        self._finish(report, off, reason)

    def scan(self, info: SegmentInfo) -> None:
        """Fill ``info`` with this segment's span, counts and tail."""
        h = self.header
        info.format_version, info.schema_version = h.format_version, h.schema_version
        info.start_ns = info.end_ns = h.start_ns
        info.meta = h.meta
        info.size = len(self._buf)
        counts: dict[bytes, int] = {}
        buf = self._buf
        first = 0
        last = h.start_ns
        report = ReadReport()
        for recv_ns, t0, t1, _ in iter_frames(buf, h.size, report):
            if not first:
                first = recv_ns
            last = recv_ns
            topic = buf[t0:t1]
            counts[topic] = counts.get(topic, 0) + 1
        if not report.torn_tail and self.problem:
            report.torn_tail, report.tail_reason = True, self.problem
        self.report = report
        info.first_ns = first
        info.end_ns = max(last, h.start_ns)
        info.records = report.records
        info.full_topics = {k.decode("utf-8", "replace"): v for k, v in sorted(counts.items())}
        info.topics = top_level(info.full_topics)
        info.torn_tail, info.bytes_skipped, info.tail_reason = (
            report.torn_tail, report.bytes_skipped, report.tail_reason)


def top_level(full: dict[str, int]) -> dict[str, int]:
    """Per-topic counts summed by the topic's first dotted part (``md``, ``hb``, ...)."""
    out: dict[str, int] = {}
    for topic, n in full.items():
        top = topic.split(".", 1)[0]
        out[top] = out.get(top, 0) + n
    return dict(sorted(out.items()))


def scan_segment(path: str | os.PathLike[str]) -> SegmentInfo:
    """Summarise one segment: time span, record count, per-topic counts and torn-tail
    information. Never raises on a bad file: ``error`` says what is wrong."""
    info = SegmentInfo(path=str(path), compressed=is_compressed(path))
    try:
        info.disk_bytes = os.path.getsize(path)
        reader = SegmentReader(path)
    except (OSError, RecordingError) as exc:
        info.error = str(exc)
        info.size = info.disk_bytes
        return info
    with reader:
        reader.scan(info)
    return info
