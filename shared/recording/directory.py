"""A recording directory as a whole: which files are segments, seeking by index,
reading across segments, removing segments and leftovers, disk usage.

Every reader goes through ``segment_paths``: it yields each segment once whatever form
it is in (``X.btcrec``, ``X.btcrec.zst``, or both for a moment during compression,
when the compressed copy is chosen: see compress.py for why that copy is whole).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.recording.compress import fsync_dir
from shared.recording.format import (
    SUFFIX,
    TMP_SUFFIX,
    ZSUFFIX,
    ReadReport,
    Record,
    segment_stem,
)
from shared.recording.index import (
    SegmentIndex,
    ensure_index,
    index_path,
    load_index,
)
from shared.recording.locks import is_open, try_lock
from shared.recording.reader import SegmentReader, start_of


def segment_paths(target: str | os.PathLike[str]) -> list[Path]:
    """A segment file itself, or every segment in a directory in time order, each
    segment once (its compressed copy when both forms exist)."""
    p = Path(target)
    if p.is_dir():
        chosen: dict[str, Path] = {}
        for q in p.iterdir():
            stem = segment_stem(q.name)
            if stem is None or not q.is_file():
                continue
            if stem not in chosen or q.name.endswith(ZSUFFIX):
                chosen[stem] = q
        return [chosen[s] for s in sorted(chosen)]
    if p.exists():
        return [p]
    if p.name.endswith(SUFFIX) and p.with_name(p.name + ".zst").exists():
        return [p.with_name(p.name + ".zst")]  # compressed since it was listed
    raise FileNotFoundError(f"no such recording: {p}")


@dataclass(frozen=True)
class Span:
    """What seeking knows of a segment without reading it."""

    path: Path
    first_ns: int
    last_ns: int  # 2**63 - 1 for a segment still being written
    index: SegmentIndex | None


_OPEN_END = 2**63 - 1


def spans(paths: list[Path], *, build: bool = True) -> list[Span]:
    """Each segment's record time span from its index (rebuilt by scanning when
    missing, if ``build``); a segment being written spans from its start to forever."""
    out = []
    for p in paths:
        idx = load_index(p)
        if idx is None and is_open(p):
            start = start_of(p)
            out.append(Span(p, start, _OPEN_END, None))
            continue
        if idx is None and build:
            idx = ensure_index(p)
        if idx is None:  # unreadable or not built: cannot rule it out
            out.append(Span(p, start_of(p), _OPEN_END, None))
            continue
        first, last = idx.span
        out.append(Span(p, first, last, idx))
    return out


def seek_segments(paths: list[Path], from_ns: int | None, to_ns: int | None) -> list[Path]:
    """The segments that can hold records in [from_ns, to_ns], judged by their
    indexes: a window inside one segment opens only that one."""
    if from_ns is None and to_ns is None:
        return list(paths)
    lo = from_ns if from_ns is not None else -(2**63)
    hi = to_ns if to_ns is not None else _OPEN_END
    return [s.path for s in spans(paths) if s.last_ns >= lo and s.first_ns <= hi]


def read_recording(
    target: str | os.PathLike[str],
    topics: Iterable[str] | None = None,
    from_ns: int | None = None,
    to_ns: int | None = None,
    reports: dict[str, ReadReport] | None = None,
) -> Iterator[Record]:
    """Every record of a segment or a directory of segments, in file order, opening
    only the segments whose index overlaps [from_ns, to_ns]. Unreadable segments raise
    RecordingError; torn tails are reported in ``reports`` (path → ReadReport)."""
    topics = list(topics) if topics else None
    for path in seek_segments(segment_paths(target), from_ns, to_ns):
        with SegmentReader(path) as reader:
            yield from reader.records(topics, from_ns, to_ns)
            if reports is not None:
                reports[str(path)] = reader.report


def last_before(
    target: str | os.PathLike[str],
    prefixes: Iterable[str],
    before_ns: int,
    keep: Callable[[str], bool] = lambda topic: True,
) -> dict[str, Record]:
    """The last record before ``before_ns`` of every topic under ``prefixes`` (that
    ``keep`` accepts): the state a window starting at ``before_ns`` needs first.

    Walks the segments backwards from the window and stops as soon as every such topic
    the indexes know of has been found, so a window late in a long recording opens
    only the segments it must (usually just one)."""
    prefixes = tuple(prefixes)
    candidates = [s for s in spans(segment_paths(target)) if s.first_ns < before_ns]
    needed: set[str] = set()
    for s in candidates:
        if s.index is not None:
            needed.update(t for t in s.index.topics if t.startswith(prefixes) and keep(t))
    found: dict[str, Record] = {}
    for s in reversed(candidates):
        if needed and needed <= found.keys():
            break
        if s.index is not None and not any(
                t in needed and t not in found for t in s.index.topics):
            continue  # nothing this segment holds is still missing
        here: dict[str, Record] = {}
        with SegmentReader(s.path) as reader:
            for rec in reader.records(prefixes, None, before_ns - 1):
                if keep(rec.topic):
                    here[rec.topic] = rec
        for topic, rec in here.items():
            found.setdefault(topic, rec)
    return found


# --- removing ------------------------------------------------------------------------


def delete_segment(path: Path) -> int | None:
    """Remove a closed segment (both forms) and its index; the bytes freed, or None
    when it is open (never deleted) or already gone."""
    lock = try_lock(path)
    if lock is None:
        return None
    try:
        stem = segment_stem(path.name)
        assert stem is not None
        freed = 0
        for q in (path.with_name(stem + SUFFIX), path.with_name(stem + ZSUFFIX)):
            try:
                freed += q.stat().st_size
                q.unlink()
            except FileNotFoundError:
                pass
        index_path(path).unlink(missing_ok=True)
        fsync_dir(path.parent)
        return freed
    finally:
        os.close(lock)


def cleanup(directory: Path) -> list[Path]:
    """Remove what an interrupted compression or index write left behind: temporary
    files (only when their segment is not locked, i.e. nobody is writing them now) and
    originals whose compressed copy is complete. Returns what was removed."""
    removed: list[Path] = []
    for q in sorted(directory.iterdir()):
        name = q.name
        if name.endswith(TMP_SUFFIX):
            base = name[: -len(TMP_SUFFIX)]
            stem = segment_stem(base) or (base[: -len(".btcidx")]
                                          if base.endswith(".btcidx") else None)
            if stem is None:
                continue
            original = directory / (stem + SUFFIX)
            lock = try_lock(original) if original.exists() else None
            if original.exists() and lock is None:
                continue  # being compressed (or written) right now
            try:
                q.unlink(missing_ok=True)
                removed.append(q)
            finally:
                if lock is not None:
                    os.close(lock)
        elif name.endswith(SUFFIX) and (directory / (name + ".zst")).exists():
            lock = try_lock(q)
            if lock is None:
                continue
            try:
                q.unlink(missing_ok=True)
                removed.append(q)
            finally:
                os.close(lock)
    if removed:
        fsync_dir(directory)
    return removed


# --- usage -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentFacts:
    """One segment as retention and ``recordings du`` see it."""

    path: Path
    first_ns: int
    last_ns: int
    disk_bytes: int
    records: int
    compressed: bool
    is_open: bool


def segment_facts(directory: Path) -> list[SegmentFacts]:
    """Every segment, oldest first, from its index (rebuilt if missing)."""
    out = []
    for s in spans(segment_paths(directory)) if directory.is_dir() else []:
        try:
            disk = s.path.stat().st_size
        except FileNotFoundError:
            continue
        open_ = s.last_ns == _OPEN_END
        last = s.first_ns if open_ or s.index is None else s.last_ns
        records = s.index.records if s.index is not None else 0
        out.append(SegmentFacts(s.path, s.first_ns, last, disk, records,
                                s.path.name.endswith(ZSUFFIX), open_))
    return out


def free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free
