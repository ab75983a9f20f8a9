"""Housekeeping of a recordings directory: compress closed segments, apply retention,
measure usage. Used by the recorder's background thread and by the operator's
``recordings compress|prune|du`` commands alike, so both follow the same rules (and
the same locks: an operator's command never touches the segment being written)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from shared.recording.compress import DEFAULT_LEVEL, Fault, _no_fault, compress_segment
from shared.recording.directory import (
    SegmentFacts,
    cleanup,
    delete_segment,
    free_bytes,
    segment_facts,
    segment_paths,
)
from shared.recording.format import SUFFIX
from shared.recording.locks import is_open
from shared.recording.retention import Removal, plan_retention

HOUR_NS = 3600 * 1_000_000_000


@dataclass
class Compressed:
    path: Path
    before: int
    after: int


def compress_closed(
    directory: Path, level: int = DEFAULT_LEVEL, fault: Fault = _no_fault,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Compressed]:
    """Compress every closed uncompressed segment, oldest first (after removing the
    leftovers of an interrupted run). Raises OSError on the first failure; what was
    done before it stays done."""
    if not directory.is_dir():
        return []
    cleanup(directory)
    done = []
    for p in segment_paths(directory):
        if should_stop():
            break
        if not p.name.endswith(SUFFIX) or is_open(p):
            continue
        before = p.stat().st_size
        out = compress_segment(p, level, fault)
        if out is not None:
            after = out.stat().st_size
            done.append(Compressed(out, before, after))
            logger.info("recordings: compressed {} ({} -> {} bytes, {:.1f}x)", p.name, before,
                        after, before / after if after else 0.0)
    return done


def prune(
    directory: Path, now_ns: int, retain_days: float, retain_bytes: int, *,
    dry_run: bool = False,
) -> list[Removal]:
    """Apply retention; each removal is logged with its reason. Returns what was (or,
    with ``dry_run``, would be) removed."""
    if not directory.is_dir():
        return []
    plan = plan_retention(segment_facts(directory), now_ns, retain_days, retain_bytes)
    done = []
    for r in plan:
        seg = r.segment
        assert isinstance(seg, SegmentFacts)
        if dry_run:
            done.append(r)
            continue
        freed = delete_segment(seg.path)
        if freed is None:
            continue  # opened or removed by someone else meanwhile
        done.append(r)
        logger.warning("recordings: removed {} ({} bytes, {} records) by retention ({})",
                       seg.path.name, freed, seg.records, r.reason)
    return done


@dataclass
class Usage:
    segments: int = 0
    records: int = 0
    disk_bytes: int = 0
    compressed_segments: int = 0
    oldest_ns: int = 0  # the oldest record's receive time (0: none)
    newest_ns: int = 0
    free_bytes: int = 0
    # Bytes on disk attributed to each of the last 24 hours (index 0 = the oldest hour),
    # spreading each segment's size evenly over its time span.
    hourly: list[int] = field(default_factory=list)

    @property
    def bytes_per_hour_last_day(self) -> float:
        """The mean over the hours of the last day that the recordings cover."""
        covered = [b for b in self.hourly if b]
        return sum(covered) / len(covered) if covered else 0.0


def usage(directory: Path, now_ns: int, facts: list[SegmentFacts] | None = None) -> Usage:
    u = Usage()
    if not directory.is_dir():
        return u
    facts = segment_facts(directory) if facts is None else facts
    u.free_bytes = free_bytes(directory)
    u.hourly = [0] * 24
    start = now_ns - 24 * HOUR_NS
    for f in facts:
        u.segments += 1
        u.records += f.records
        u.disk_bytes += f.disk_bytes
        u.compressed_segments += f.compressed
        if f.records:
            u.oldest_ns = min(u.oldest_ns or f.first_ns, f.first_ns)
            u.newest_ns = max(u.newest_ns, f.last_ns)
        lo, hi = f.first_ns, (now_ns if f.is_open else f.last_ns)
        if hi < start or not f.records:
            continue
        span = max(hi - lo, 1)
        for h in range(24):
            b0, b1 = start + h * HOUR_NS, start + (h + 1) * HOUR_NS
            overlap = min(hi, b1) - max(lo, b0)
            if overlap > 0 or (hi == lo and b0 <= lo < b1):
                u.hourly[h] += int(f.disk_bytes * max(overlap, 1) / span)
    return u


def dir_bytes(directory: Path) -> int:
    """Everything in the directory, leftovers and indexes included (what df sees)."""
    total = 0
    with os.scandir(directory) as it:
        for e in it:
            if e.is_file(follow_symlinks=False):
                total += e.stat(follow_symlinks=False).st_size
    return total
