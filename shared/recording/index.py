"""The index of a segment: a small JSON sidecar ``rec-<...>.btcidx``.

It holds what a reader needs to decide whether to open the segment at all (first and
last record times, record count, per-topic counts) and what ``recordings list/du``
and retention need without decompressing anything. The writer produces it when the
segment closes; a missing or stale one (a SIGKILLed recorder never closed its last
segment) is rebuilt by scanning. It is only ever derived from the segment, so losing
it loses nothing: the segment stays the single source of truth.

Staleness check: the index records the segment's own (decompressed) size; an index
whose size differs from the segment's is ignored and rebuilt.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from shared.recording.format import INDEX_SUFFIX, SUFFIX, TMP_SUFFIX, segment_stem
from shared.recording.locks import is_open
from shared.recording.reader import SegmentInfo, content_size, scan_segment

INDEX_VERSION = 1


class SegmentIndex(msgspec.Struct, kw_only=True):
    version: int = INDEX_VERSION
    segment: str  # the uncompressed segment's file name (the same for both forms)
    start_ns: int  # from the header
    first_ns: int  # first record's receive time (0: no records)
    last_ns: int  # last record's receive time (0: no records)
    records: int
    topics: dict[str, int]  # per exact topic
    content_bytes: int  # the segment's own size (decompressed)
    schema_version: int = 0
    torn_tail: bool = False
    bytes_skipped: int = 0
    tail_reason: str = ""

    @property
    def span(self) -> tuple[int, int]:
        """[first, last] receive time; an empty segment spans its start instant."""
        if not self.records:
            return self.start_ns, self.start_ns
        return self.first_ns, self.last_ns


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SegmentIndex)


def index_path(segment: Path) -> Path:
    stem = segment_stem(segment.name)
    if stem is None:
        raise ValueError(f"not a segment file name: {segment.name}")
    return segment.with_name(stem + INDEX_SUFFIX)


def write_index(segment: Path, index: SegmentIndex) -> None:
    """Atomically (temporary name, fsync, rename): a reader sees the old index, the new
    one or none, never half of one."""
    final = index_path(segment)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 0o600)
    try:
        data = _encoder.encode(index)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def read_index(segment: Path) -> SegmentIndex | None:
    """The sidecar as written, or None when missing or unreadable (not validated)."""
    try:
        raw = index_path(segment).read_bytes()
    except OSError:
        return None
    try:
        idx = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return idx if idx.version == INDEX_VERSION else None


def index_from_info(info: SegmentInfo) -> SegmentIndex:
    return SegmentIndex(
        segment=(segment_stem(Path(info.path).name) or "") + SUFFIX, start_ns=info.start_ns,
        first_ns=info.first_ns, last_ns=info.end_ns if info.records else 0,
        records=info.records, topics=dict(info.full_topics), content_bytes=info.size,
        schema_version=info.schema_version, torn_tail=info.torn_tail,
        bytes_skipped=info.bytes_skipped, tail_reason=info.tail_reason,
    )


def load_index(segment: Path) -> SegmentIndex | None:
    """The sidecar if it describes the segment as it is now, else None."""
    idx = read_index(segment)
    if idx is None:
        return None
    try:
        size = content_size(segment)
    except OSError:
        return None
    return idx if size == idx.content_bytes else None


def ensure_index(segment: Path, *, write: bool = True, locked: bool = False) -> SegmentIndex | None:
    """A valid index for ``segment``: the sidecar, or one rebuilt by scanning (and
    written back when ``write`` and the segment is closed, which ``locked`` says the
    caller knows because it holds the segment's lock). None if the file is not a
    readable segment."""
    idx = load_index(segment)
    if idx is not None:
        return idx
    info = scan_segment(segment)
    if info.error:
        return None
    idx = index_from_info(info)
    if write and (locked or not is_open(segment)):
        try:
            write_index(segment, idx)
        except OSError:
            pass  # a read-only or full disk: the index is a cache, scanning again works
    return idx
