"""The segment format: header, framed records, names (pure: no I/O beyond bytes).

A recording is a directory of segment files ``rec-<UTC start>-<start ns>.btcrec``
(lexical order is time order); a closed segment may be stored zstd-compressed as
``<same name>.zst`` (the compressed bytes are exactly the segment's bytes), and has an
index sidecar ``rec-<...>.btcidx`` (see index.py). Each segment is::

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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import msgspec

MAGIC = b"BTCBREC\x00"
FORMAT_VERSION = 1
SUFFIX = ".btcrec"
ZSUFFIX = SUFFIX + ".zst"  # a closed segment, compressed whole (one zstd frame)
INDEX_SUFFIX = ".btcidx"  # the index sidecar of a segment (either form)
TMP_SUFFIX = ".tmp"  # being written; never read, removed by cleanup

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


# --- names and times ---------------------------------------------------------------


def segment_name(start_ns: int) -> str:
    stamp = datetime.fromtimestamp(start_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"rec-{stamp}-{start_ns:019d}{SUFFIX}"


def segment_stem(name: str) -> str | None:
    """``rec-...`` without its suffix, for a segment file name in either form; None for
    anything else (temporary files, index sidecars, strangers)."""
    if name.endswith(ZSUFFIX):
        return name[: -len(ZSUFFIX)]
    if name.endswith(SUFFIX):
        return name[: -len(SUFFIX)]
    return None


def is_compressed(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).endswith(ZSUFFIX)


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
