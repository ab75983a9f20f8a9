"""Recording segment files: the on-disk format, a writer and a reader (pure: no zmq).

A recording is a directory of segment files ``rec-<UTC start>-<start ns>.btcrec``
(lexical order is time order). Each segment is::

    header  = MAGIC(8) | <HHqI format_version, schema_version, start_ns, meta_len>
              | meta (msgpack map) | <I crc32 of everything before it>
    record* = <II content_len, crc32(content)> | content
    content = <qH recv_wall_ns, topic_len> | topic (utf-8) | payload (raw msgpack Packet)

Why this shape: the writer only ever appends, so a crash (SIGKILL, power loss of the
page cache aside) can only leave an incomplete *last* record. Every record carries its
own length and checksum, so the reader knows exactly where the last complete record
ends; whatever follows (a short frame, a checksum mismatch or an absurd length) is a
torn tail that the reader skips and reports (``torn_tail``, ``bytes_skipped``) instead
of raising. A bad frame ends the readable part of a segment: after it no length can be
trusted, so the rest of that segment is counted as skipped.

The payload is stored exactly as received from the bus, so a replay can send the very
bytes that were recorded, and a later schema can still be decoded by a later reader
(the header carries ``bus.messages.SCHEMA_VERSION`` of the recorder that wrote it).
"""

from __future__ import annotations

import mmap
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from shared.files import ensure_private_dir

MAGIC = b"BTCBREC\x00"
FORMAT_VERSION = 1
SUFFIX = ".btcrec"

_HEADER = struct.Struct("<8sHHqI")  # magic, format version, schema, start_ns, meta_len
_CRC = struct.Struct("<I")
_FRAME = struct.Struct("<II")  # content_len, crc32(content)
_CONTENT = struct.Struct("<qH")  # recv_wall_ns, topic_len
FRAME_OVERHEAD = _FRAME.size + _CONTENT.size
# Larger than any sane bus message; a length beyond it can only be garbage.
MAX_CONTENT = 256 * 1024 * 1024
MAX_META = 1024 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class RecordingError(Exception):
    """A file that is not a readable segment (bad magic, bad header checksum, unknown
    format version)."""


class Record(NamedTuple):
    recv_ns: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Header:
    format_version: int
    schema_version: int
    start_ns: int
    meta: dict[str, Any]
    size: int  # bytes, i.e. the offset of the first record


@dataclass
class ReadReport:
    """Filled in while a segment is read: where the readable part ended and why."""

    records: int = 0
    valid_bytes: int = 0
    torn_tail: bool = False
    bytes_skipped: int = 0
    tail_reason: str = ""


@dataclass
class SegmentInfo:
    path: str
    format_version: int = 0
    schema_version: int = 0
    start_ns: int = 0
    end_ns: int = 0  # last record's receive time (start_ns if empty)
    first_ns: int = 0  # first record's receive time (0 if empty)
    records: int = 0
    size: int = 0
    topics: dict[str, int] = field(default_factory=dict)  # per top-level topic
    torn_tail: bool = False
    bytes_skipped: int = 0
    tail_reason: str = ""
    error: str = ""  # the file is not a readable segment at all
    meta: dict[str, Any] = field(default_factory=dict)


# --- header ----------------------------------------------------------------------


def encode_header(schema_version: int, start_ns: int, meta: dict[str, Any] | None = None) -> bytes:
    meta_bytes = _meta_encoder.encode(meta or {})
    if len(meta_bytes) > MAX_META:
        raise ValueError("recording header metadata too large")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, schema_version, start_ns, len(meta_bytes))
    head += meta_bytes
    return head + _CRC.pack(zlib.crc32(head))


def decode_header(buf: bytes | memoryview | mmap.mmap) -> Header:
    if len(buf) < _HEADER.size + _CRC.size:
        raise RecordingError("file shorter than a segment header")
    magic, version, schema, start_ns, meta_len = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise RecordingError("not a recording segment (bad magic)")
    if version != FORMAT_VERSION:
        raise RecordingError(f"unsupported recording format version {version}")
    if meta_len > MAX_META:
        raise RecordingError("corrupt header (metadata length)")
    end = _HEADER.size + meta_len
    if len(buf) < end + _CRC.size:
        raise RecordingError("truncated segment header")
    (crc,) = _CRC.unpack_from(buf, end)
    if zlib.crc32(buf[:end]) != crc:
        raise RecordingError("corrupt segment header (checksum)")
    try:
        meta = _meta_decoder.decode(bytes(buf[_HEADER.size:end]))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordingError(f"corrupt segment header metadata: {exc}") from None
    return Header(version, schema, start_ns, meta, end + _CRC.size)


# --- records ---------------------------------------------------------------------


def encode_record(recv_ns: int, topic: bytes, payload: bytes) -> bytes:
    """One framed record (used by tests; the writer inlines the same steps)."""
    head = _CONTENT.pack(recv_ns, len(topic))
    crc = zlib.crc32(payload, zlib.crc32(topic, zlib.crc32(head)))
    return _FRAME.pack(len(head) + len(topic) + len(payload), crc) + head + topic + payload


def iter_frames(
    buf: bytes | mmap.mmap, start: int, report: ReadReport
) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(recv_ns, topic_start, topic_end, payload_end)`` offsets of every
    complete, checksum-valid record from ``start``; on the first bad frame stop and
    describe the torn tail in ``report``."""
    end = len(buf)
    off = start
    unpack_frame = _FRAME.unpack_from
    unpack_content = _CONTENT.unpack_from
    crc32 = zlib.crc32
    fsize = _FRAME.size
    csize = _CONTENT.size
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
        if body + length > end:
            reason = "short record"
            break
        if crc32(buf[body:body + length]) != crc:
            reason = "checksum mismatch"
            break
        recv_ns, topic_len = unpack_content(buf, body)
        topic_start = body + csize
        if topic_start + topic_len > body + length:
            reason = "topic length beyond record"
            break
        off = body + length
        report.records += 1
        report.valid_bytes = off
        yield recv_ns, topic_start, topic_start + topic_len, off
    report.valid_bytes = off
    if off < end:
        report.torn_tail = True
        report.bytes_skipped = end - off
        report.tail_reason = reason


class SegmentReader:
    """Reads one segment through a read-only mmap (any size, no copy of the file).

    ``records()`` yields complete records only; ``report`` says afterwards whether a
    torn tail was skipped. A segment still being written may show a "torn" tail that is
    really a record in flight; it is read in full once the writer has flushed it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.report = ReadReport()
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._buf: bytes | mmap.mmap
            if size == 0:
                self._buf = b""
            else:
                self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self.header = decode_header(self._buf)
        except RecordingError:
            self.close()
            raise

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()
        self._buf = b""

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        unpack_frame, unpack_content, crc32 = _FRAME.unpack_from, _CONTENT.unpack_from, zlib.crc32
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
        report.valid_bytes = off
        if off < end:
            report.torn_tail, report.bytes_skipped, report.tail_reason = True, end - off, reason


def scan_segment(path: str | os.PathLike[str]) -> SegmentInfo:
    """Summarise one segment: time span, record count, per-top-level-topic counts and
    torn-tail information. Never raises on a bad file: ``error`` says what is wrong."""
    info = SegmentInfo(path=str(path))
    try:
        info.size = os.path.getsize(path)
        reader = SegmentReader(path)
    except (OSError, RecordingError) as exc:
        info.error = str(exc)
        return info
    with reader:
        h = reader.header
        info.format_version, info.schema_version = h.format_version, h.schema_version
        info.start_ns = info.end_ns = h.start_ns
        info.meta = h.meta
        counts: dict[bytes, int] = {}
        buf = reader._buf
        first = 0
        last = h.start_ns
        for recv_ns, t0, t1, _ in iter_frames(buf, h.size, reader.report):
            if not first:
                first = recv_ns
            last = recv_ns
            top = buf[t0:t1].split(b".", 1)[0]
            counts[top] = counts.get(top, 0) + 1
        rep = reader.report
    info.first_ns = first
    info.end_ns = max(last, h.start_ns)
    info.records = rep.records
    info.topics = {k.decode("utf-8", "replace"): v for k, v in sorted(counts.items())}
    info.torn_tail, info.bytes_skipped, info.tail_reason = (
        rep.torn_tail, rep.bytes_skipped, rep.tail_reason)
    return info


# --- several segments --------------------------------------------------------------


def segment_paths(target: str | os.PathLike[str]) -> list[Path]:
    """A segment file itself, or every segment in a directory in time order."""
    p = Path(target)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.name.endswith(SUFFIX) and q.is_file())
    if p.exists():
        return [p]
    raise FileNotFoundError(f"no such recording: {p}")


def start_of(path: Path) -> int:
    """A segment's start time from its header (0 if unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return 0
        magic, _, _, start_ns, _ = _HEADER.unpack(head)
        return start_ns if magic == MAGIC else 0
    except OSError:
        return 0


def seek_segments(paths: list[Path], from_ns: int | None, to_ns: int | None) -> list[Path]:
    """Drop whole segments that cannot hold records in [from_ns, to_ns]: segments are
    in time order, so a segment whose successor starts at or before ``from_ns`` ends
    before it, and a segment that starts after ``to_ns`` is entirely later."""
    starts = [start_of(p) for p in paths]
    keep = []
    for i, p in enumerate(paths):
        nxt = starts[i + 1] if i + 1 < len(paths) else None
        if from_ns is not None and nxt is not None and nxt and nxt <= from_ns:
            continue
        if to_ns is not None and starts[i] and starts[i] > to_ns:
            continue
        keep.append(p)
    return keep


def read_recording(
    target: str | os.PathLike[str],
    topics: Iterable[str] | None = None,
    from_ns: int | None = None,
    to_ns: int | None = None,
    reports: dict[str, ReadReport] | None = None,
) -> Iterator[Record]:
    """Every record of a segment or a directory of segments, in file order, seeking to
    the segments that overlap [from_ns, to_ns]. Unreadable segments raise
    RecordingError; torn tails are reported in ``reports`` (path → ReadReport)."""
    topics = list(topics) if topics else None
    for path in seek_segments(segment_paths(target), from_ns, to_ns):
        with SegmentReader(path) as reader:
            yield from reader.records(topics, from_ns, to_ns)
            if reports is not None:
                reports[str(path)] = reader.report


# --- writer ------------------------------------------------------------------------


def segment_name(start_ns: int) -> str:
    stamp = datetime.fromtimestamp(start_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"rec-{stamp}-{start_ns:019d}{SUFFIX}"


class SegmentWriter:
    """Appends records to segment files in ``directory``, rotating by size and age.

    Writes are buffered in memory and handed to the kernel by ``flush()`` (os.write,
    no fsync): a killed process loses only what was appended since its last flush, and
    since the file is only appended to, records already flushed stay intact. A record
    is never split across two segments."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        schema_version: int,
        max_bytes: int = 64 * 1024 * 1024,
        max_s: float = 3600.0,
        meta: dict[str, Any] | None = None,
        clock_ns: Any = time.time_ns,
    ) -> None:
        self.directory = Path(directory)
        ensure_private_dir(self.directory)
        self.schema_version = schema_version
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_s * 1e9)
        self.meta = meta or {}
        self._clock_ns = clock_ns
        self._buf = bytearray()
        self._fd = -1
        self.path: Path | None = None
        self.start_ns = 0
        self._size = 0  # bytes written to the current file, header included
        self.segments = 0  # segments opened by this writer
        self.records = 0
        self.bytes = 0
        self.oldest_unflushed_ns = 0  # receive time of the first record in the buffer
        self.last_flush_lag_ms = 0

    # The hot path: no method calls beyond the unavoidable ones.
    def append(self, recv_ns: int, topic: bytes, payload: bytes) -> None:
        head = _CONTENT.pack(recv_ns, len(topic))
        content_len = len(head) + len(topic) + len(payload)
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
        crc = zlib.crc32(payload, zlib.crc32(topic, zlib.crc32(head)))
        buf = self._buf
        buf += _FRAME.pack(content_len, crc)
        buf += head
        buf += topic
        buf += payload
        self.records += 1
        self.bytes += frame_len

    def flush(self, now_ns: int | None = None) -> None:
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
        self._buf.clear()

    def rotate(self, now_ns: int | None = None) -> None:
        self.flush()
        self._close_file()
        self._open(self._clock_ns() if now_ns is None else now_ns)

    def close(self) -> None:
        self.flush()
        self._close_file()

    def _close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self, start_ns: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        while True:
            path = self.directory / segment_name(start_ns)
            try:
                fd = os.open(path, flags, 0o600)
                break
            except FileExistsError:
                start_ns += 1  # two segments in the same ns: keep names unique and ordered
        header = encode_header(self.schema_version, start_ns, self.meta)
        os.write(fd, header)  # written at once: a segment is never without its header
        self._fd, self.path, self.start_ns = fd, path, start_ns
        self._size = self._header_size = len(header)
        self.segments += 1


def iso_ns(ns: int) -> str:
    """UTC ISO-8601 with nanoseconds, for operators."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def parse_time(text: str) -> int:
    """ISO-8601 (a naive time is UTC) or epoch seconds (fractions allowed) → ns.
    Raises ValueError with a message for the operator."""
    t = text.strip()
    try:
        value = Decimal(t)
    except InvalidOperation:
        value = None
    if value is not None:
        if not value.is_finite():
            raise ValueError(f"{text!r} is not a time")
        return int(value * 1_000_000_000)
    iso = t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO-8601 nor epoch seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000
