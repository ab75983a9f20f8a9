"""Recordings that last: compressed segments read like plain ones, compression killed
at every step loses nothing and duplicates nothing, the index and seeking by it, the
open segment's lock, retention by age and size with an injected clock, and the
writer's behaviour on a full disk. Files only, no bus; the kill test uses real
processes (SIGKILL at each step through the compressor's fault seam)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared.recording.directory as directory_mod
from shared.recording import (
    SegmentReader,
    SegmentWriter,
    read_recording,
    scan_segment,
    seek_segments,
    segment_paths,
)
from shared.recording.compress import STEPS, compress_segment, compressed_path
from shared.recording.directory import cleanup, delete_segment, segment_facts
from shared.recording.index import index_path, load_index, read_index
from shared.recording.maintenance import compress_closed, prune, usage
from shared.recording.retention import DAY_NS, plan_retention

T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000
HOUR = 3600 * SEC


def write_segments(root: Path, per_segment: list[int], step_ns: int = SEC // 10,
                   start: int = T0, gap_ns: int = 0) -> list[bytes]:
    """Closed segments of ``per_segment[i]`` records each; payloads are unique and
    returned in order."""
    payloads = []
    t = start
    n = 0
    for count in per_segment:
        w = SegmentWriter(root, schema_version=1, max_bytes=2**40, max_s=1e9)
        for _ in range(count):
            n += 1
            payload = b"payload-%08d" % n + b"x" * 200
            topic = b"md.book.BTCTRY" if n % 3 else b"hb.marketdata"
            w.append(t, topic, payload)
            payloads.append(payload)
            t += step_ns
        w.close()
        t += gap_ns
    return payloads


def all_payloads(root: Path) -> list[bytes]:
    return [r.payload for r in read_recording(root)]


# --- compressed segments read like plain ones ------------------------------------------


def test_compressed_and_plain_segments_read_alike(tmp_path: Path) -> None:
    payloads = write_segments(tmp_path, [50, 60, 70])
    plain = [scan_segment(p) for p in segment_paths(tmp_path)]
    first, second, _ = segment_paths(tmp_path)
    assert compress_segment(first) == compressed_path(first)
    assert compress_segment(second) is not None
    paths = segment_paths(tmp_path)
    assert [p.name.endswith(".zst") for p in paths] == [True, True, False]
    assert all_payloads(tmp_path) == payloads  # all of them, in order, once
    for before, p in zip(plain, paths, strict=True):
        info = scan_segment(p)
        assert (info.records, info.first_ns, info.end_ns, info.size, info.topics) == (
            before.records, before.first_ns, before.end_ns, before.size, before.topics)
        assert info.compressed == p.name.endswith(".zst")
    assert scan_segment(paths[0]).disk_bytes < plain[0].size / 3
    # A reader that names the file it listed before compression still finds it.
    assert list(read_recording(first))[0].payload == payloads[0]


def test_a_damaged_compressed_segment_reports_a_torn_tail_not_garbage(tmp_path: Path) -> None:
    write_segments(tmp_path, [4000])
    z = compress_segment(segment_paths(tmp_path)[0])
    assert z is not None
    data = bytearray(z.read_bytes())
    data[len(data) // 2] ^= 0xFF
    z.write_bytes(bytes(data))
    with SegmentReader(z) as r:
        got = list(r.records())
        assert r.report.torn_tail
    assert 0 < len(got) < 4000  # complete records only; none invented


# --- compression killed at every step --------------------------------------------------

KILLER = r"""
import os, sys
from pathlib import Path
from shared.recording.compress import compress_segment
step = sys.argv[2]
def fault(at):
    if at == step:
        os.kill(os.getpid(), 9)
compress_segment(Path(sys.argv[1]), fault=fault)
raise SystemExit("the fault seam was never reached")
"""


@pytest.mark.parametrize("step", STEPS)
def test_compression_killed_at_each_step_keeps_every_record_exactly_once(
        tmp_path: Path, step: str) -> None:
    # Large enough that the compressed output spans several blocks (tmp_partial is a
    # real partial file).
    payloads = write_segments(tmp_path, [30, 3000, 20])
    victim = segment_paths(tmp_path)[1]
    if step != "indexed":
        index_path(victim).unlink()  # the compressor must rebuild it before going on
    proc = subprocess.run([sys.executable, "-c", KILLER, str(victim), step],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # Right after the kill, before any cleanup: every record once, nothing else.
    assert all_payloads(tmp_path) == payloads
    assert not any(scan_segment(p).torn_tail for p in segment_paths(tmp_path))
    # The next housekeeping pass (recorder start, or `recordings compress`) finishes.
    compress_closed(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    assert [n.endswith(".zst") for n in names if ".btcrec" in n] == [True, True, True]
    assert all_payloads(tmp_path) == payloads
    for p in segment_paths(tmp_path):
        assert load_index(p) is not None


# --- the open segment ------------------------------------------------------------------


def test_the_open_segment_is_never_compressed_or_removed(tmp_path: Path) -> None:
    write_segments(tmp_path, [10, 10])
    w = SegmentWriter(tmp_path, schema_version=1)
    w.append(T0 + 100 * SEC, b"md.x", b"live")
    w.flush()
    assert w.path is not None
    live = w.path
    done = compress_closed(tmp_path)
    assert len(done) == 2 and live.exists() and compress_segment(live) is None
    assert delete_segment(live) is None and live.exists()
    # Every limit exceeded: the closed ones go, the open one stays.
    removed = prune(tmp_path, T0 + 1000 * DAY_NS, retain_days=1, retain_bytes=1)
    assert len(removed) == 2
    assert segment_paths(tmp_path) == [live]
    w.append(T0 + 101 * SEC, b"md.x", b"more")
    w.close()  # closed now: fair game
    assert compress_segment(live) is not None
    assert [r.payload for r in read_recording(tmp_path)] == [b"live", b"more"]


def test_cleanup_leaves_a_compression_in_progress_alone(tmp_path: Path) -> None:
    write_segments(tmp_path, [10])
    seg = segment_paths(tmp_path)[0]
    tmp = compressed_path(seg).with_name(compressed_path(seg).name + ".tmp")
    tmp.write_bytes(b"half")
    import fcntl
    fd = os.open(seg, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # someone is compressing it right now
    try:
        assert cleanup(tmp_path) == [] and tmp.exists()
    finally:
        os.close(fd)
    assert cleanup(tmp_path) == [tmp] and not tmp.exists()


# --- the index -------------------------------------------------------------------------


def test_index_written_at_close_matches_a_scan_and_is_rebuilt_when_missing(
        tmp_path: Path) -> None:
    write_segments(tmp_path, [25])
    seg = segment_paths(tmp_path)[0]
    idx = read_index(seg)
    assert idx is not None
    info = scan_segment(seg)
    assert (idx.records, idx.first_ns, idx.last_ns, idx.content_bytes) == (
        info.records, info.first_ns, info.end_ns, info.size)
    assert idx.topics == info.full_topics == {"hb.marketdata": 8, "md.book.BTCTRY": 17}
    # Stale (the segment changed behind it): ignored, then rebuilt by a reader.
    with open(seg, "ab") as f:
        f.write(b"\x00")
    assert load_index(seg) is None
    index_path(seg).unlink()
    assert seek_segments([seg], T0, T0 + 1)
    rebuilt = load_index(seg)
    assert rebuilt is not None and rebuilt.torn_tail and rebuilt.records == 25


def test_a_window_in_the_last_segment_opens_only_that_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = write_segments(tmp_path, [100, 100, 100, 100], step_ns=SEC, gap_ns=HOUR)
    paths = segment_paths(tmp_path)
    compress_segment(paths[0])
    compress_segment(paths[1])
    paths = segment_paths(tmp_path)
    last = scan_segment(paths[-1])
    opened: list[str] = []
    real = directory_mod.SegmentReader

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str | os.PathLike[str]) -> None:
            opened.append(Path(path).name)
            super().__init__(path)

    monkeypatch.setattr(directory_mod, "SegmentReader", Spy)
    for name in ("scan_segment", "start_of"):  # neither may look inside the others
        monkeypatch.setattr(directory_mod, name, _forbidden, raising=False)
    got = list(read_recording(tmp_path, from_ns=last.first_ns + 10 * SEC,
                              to_ns=last.first_ns + 20 * SEC))
    assert opened == [paths[-1].name]
    assert [r.payload for r in got] == payloads[310:321]


def _forbidden(*args: object) -> None:
    raise AssertionError("a segment outside the window was read")


# --- retention -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seg:
    first_ns: int
    last_ns: int
    disk_bytes: int
    is_open: bool = False


def test_retention_by_age_with_an_injected_clock(tmp_path: Path) -> None:
    # Three segments a day apart; the last is the open one.
    write_segments(tmp_path, [10, 10], step_ns=SEC, gap_ns=DAY_NS)
    w = SegmentWriter(tmp_path, schema_version=1)
    w.append(T0 + 2 * DAY_NS + 100 * SEC, b"md.x", b"open")
    w.flush()
    now = T0 + 2 * DAY_NS + 200 * SEC
    assert prune(tmp_path, now, retain_days=3, retain_bytes=0) == []
    removed = prune(tmp_path, now, retain_days=1.5, retain_bytes=0, dry_run=True)
    assert [r.reason for r in removed] == ["age"] and len(segment_paths(tmp_path)) == 3
    removed = prune(tmp_path, now, retain_days=1.5, retain_bytes=0)
    assert len(removed) == 1 and len(segment_paths(tmp_path)) == 2
    assert not index_path(removed[0].segment.path).exists()  # type: ignore[attr-defined]
    # Far in the future: everything closed is too old; the open one stays.
    removed = prune(tmp_path, now + 100 * DAY_NS, retain_days=30, retain_bytes=0)
    assert len(removed) == 1 and segment_paths(tmp_path) == [w.path]
    w.close()


def test_retention_by_size_removes_the_oldest_first(tmp_path: Path) -> None:
    write_segments(tmp_path, [40, 40, 40, 40])
    facts = segment_facts(tmp_path)
    sizes = [f.disk_bytes for f in facts]
    limit = sizes[2] + sizes[3]
    removed = prune(tmp_path, T0, retain_days=0, retain_bytes=limit)
    assert [r.segment.path for r in removed] == [facts[0].path, facts[1].path]  # type: ignore[attr-defined]
    assert [f.path for f in segment_facts(tmp_path)] == [facts[2].path, facts[3].path]
    assert prune(tmp_path, T0, retain_days=0, retain_bytes=0) == []  # 0 disables


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 1000), min_size=0, max_size=12),
    open_last=st.booleans(),
    retain_days=st.sampled_from([0, 0.5, 1, 3]),
    retain_bytes=st.integers(0, 6000),
    now_day=st.integers(0, 15),
)
def test_retention_plan_properties(sizes: list[int], open_last: bool, retain_days: float,
                                   retain_bytes: int, now_day: int) -> None:
    segs = [Seg(i * DAY_NS, i * DAY_NS + HOUR, s,
                is_open=open_last and i == len(sizes) - 1) for i, s in enumerate(sizes)]
    now = now_day * DAY_NS
    plan = plan_retention(segs, now, retain_days, retain_bytes)
    gone = [r.segment for r in plan]
    kept = [s for s in segs if s not in gone]
    assert not any(s.is_open for s in gone)  # never the open one
    assert len(set(map(id, gone))) == len(gone)  # never twice
    # Oldest first: nothing kept (closed) is older than something removed by size.
    by_size = [r.segment for r in plan if r.reason == "size"]
    if by_size:
        newest_removed = max(segs.index(s) for s in by_size)
        assert all(segs.index(s) > newest_removed or s.is_open for s in kept)
    if retain_bytes:
        closed_kept = [s for s in kept if not s.is_open]
        assert sum(s.disk_bytes for s in kept) <= retain_bytes or not closed_kept
    else:
        assert not by_size
    for s in segs:  # by age: exactly the closed segments wholly older than the cutoff
        too_old = retain_days > 0 and s.last_ns < now - retain_days * DAY_NS and not s.is_open
        assert (s in gone and any(r.segment is s and r.reason == "age" for r in plan)) == too_old


# --- usage -----------------------------------------------------------------------------


def test_usage_totals_and_bytes_per_hour(tmp_path: Path) -> None:
    # Two one-hour segments: the first 3 h ago, the second just ended.
    now = T0 + 4 * HOUR
    write_segments(tmp_path, [360], step_ns=10 * SEC, start=now - 3 * HOUR)
    write_segments(tmp_path, [360], step_ns=10 * SEC, start=now - HOUR)
    compress_closed(tmp_path)
    u = usage(tmp_path, now)
    facts = segment_facts(tmp_path)
    assert u.segments == 2 and u.compressed_segments == 2 and u.records == 720
    assert u.disk_bytes == sum(f.disk_bytes for f in facts)
    assert u.oldest_ns == now - 3 * HOUR and u.free_bytes > 0
    assert sum(u.hourly) == pytest.approx(u.disk_bytes, rel=0.01)
    assert u.hourly[-1] > 0 and u.hourly[-2] == 0 and u.hourly[-3] > 0
    assert u.bytes_per_hour_last_day == pytest.approx(u.disk_bytes / 2, rel=0.02)


# --- a full disk -----------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> object:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_writer_on_a_full_disk_keeps_what_it_flushed_readable(tiny_fs: Path) -> None:
    w = SegmentWriter(tiny_fs, schema_version=1, max_bytes=2**40)
    flushed = []
    with pytest.raises(OSError) as err:
        for i in range(10_000):
            payload = b"%06d" % i + b"y" * 500
            w.append(T0 + i, b"md.x", payload)
            if i % 10 == 9:
                w.flush()
                flushed = list(range(i + 1))
    assert err.value.errno == 28  # ENOSPC
    dropped = w.abandon()
    assert 0 < dropped <= 10
    got = [int(r.payload[:6]) for r in read_recording(tiny_fs)]
    assert got == flushed  # a clean cut at the last flush: no torn record inside
    assert not any(scan_segment(p).torn_tail for p in segment_paths(tiny_fs))
    # Space comes back: a new segment takes the next records.
    shutil.rmtree(tiny_fs / "ignored", ignore_errors=True)
    for p in segment_paths(tiny_fs):
        p.unlink()
    w.start_segment(T0 + 10**9)
    w.append(T0 + 10**9, b"md.x", b"after")
    w.close()
    assert [r.payload for r in read_recording(tiny_fs)] == [b"after"]


def test_primers_for_a_window_in_the_last_segment_open_only_that_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What replay --from needs before the window (the last rules/status of each topic)
    comes from walking back through the indexes, not from reading every segment."""
    from shared.recording import last_before

    for seg in range(4):
        w = SegmentWriter(tmp_path, schema_version=1, max_bytes=2**40, max_s=1e9)
        for i in range(50):
            t = T0 + seg * HOUR + i * SEC
            w.append(t, b"md.rules.BTCTRY", b"rules-%d-%d" % (seg, i))
            w.append(t, b"md.book.BTCTRY", b"book")
        w.close()
    paths = segment_paths(tmp_path)
    compress_segment(paths[0])
    paths = segment_paths(tmp_path)
    opened: list[str] = []
    real = directory_mod.SegmentReader

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str | os.PathLike[str]) -> None:
            opened.append(Path(path).name)
            super().__init__(path)

    monkeypatch.setattr(directory_mod, "SegmentReader", Spy)
    got = last_before(tmp_path, ["md.rules."], T0 + 3 * HOUR + 10 * SEC)
    assert opened == [paths[-1].name]
    assert got["md.rules.BTCTRY"].payload == b"rules-3-9"
    # A window starting with the last segment's first record: only the one before it.
    opened.clear()
    got = last_before(tmp_path, ["md.rules."], T0 + 3 * HOUR)
    assert opened == [paths[-2].name]
    assert got["md.rules.BTCTRY"].payload == b"rules-2-49"
