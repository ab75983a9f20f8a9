"""``btcbot-supervisor recordings list|du|prune|compress`` on a temporary recordings
directory, bad arguments included (exit 2 naming the problem)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from actors.supervisor.cli import cli
from shared.recording import SegmentWriter, read_recording, segment_paths

SEC = 1_000_000_000
HOUR = 3600 * SEC


def make_dir(root: Path, segments: int, per: int = 200, start_ns: int | None = None,
             step_ns: int = SEC) -> list[bytes]:
    t = start_ns if start_ns is not None else time.time_ns() - segments * per * step_ns
    out = []
    for s in range(segments):
        w = SegmentWriter(root, schema_version=1, max_bytes=2**40, max_s=1e9)
        for i in range(per):
            payload = b"%03d-%05d" % (s, i) + b"z" * 300
            w.append(t, b"md.book.BTCTRY", payload)
            out.append(payload)
            t += step_ns
        w.close()
    return out


def run(*argv: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(argv))
    return res.exit_code, res.output


def test_list_du_compress_prune_in_a_session(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    payloads = make_dir(rec, 4)
    code, out = run("recordings", "list", str(rec), "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [r["compressed"] for r in rows] == [False] * 4
    assert all(r["records"] == 200 and r["disk_bytes"] == r["size"] for r in rows)

    code, out = run("recordings", "compress", str(rec))
    assert code == 0, out
    assert "compressed 4 segments" in out
    rows = json.loads(run("recordings", "list", str(rec), "--json")[1])
    assert [r["compressed"] for r in rows] == [True] * 4
    assert all(r["disk_bytes"] < r["size"] / 4 for r in rows)
    code, out = run("recordings", "list", str(rec))
    assert code == 0 and out.count("(zstd;") == 4
    assert [r.payload for r in read_recording(rec)] == payloads

    code, out = run("recordings", "du", str(rec), "--json")
    assert code == 0, out
    du = json.loads(out)
    assert du["segments"] == 4 and du["compressed_segments"] == 4 and du["records"] == 800
    assert du["disk_bytes"] == sum(r["disk_bytes"] for r in rows)
    assert du["free_bytes"] > 0 and len(du["last_day"]) == 24
    assert du["bytes_per_hour_last_day"] > 0
    code, out = run("recordings", "du", str(rec))
    assert code == 0 and "4 segments (4 compressed)" in out

    keep = rows[-1]["disk_bytes"] + rows[-2]["disk_bytes"]
    code, out = run("recordings", "prune", str(rec), "--keep-days", "0", "--keep-bytes",
                    str(keep), "--dry-run")
    assert code == 0 and "would remove 2 segments" in out, out
    assert len(segment_paths(rec)) == 4
    code, out = run("recordings", "prune", str(rec), "--keep-days", "0", "--keep-bytes",
                    str(keep))
    assert code == 0 and "removed 2 segments" in out and "(size)" in out, out
    assert [r.payload for r in read_recording(rec)] == payloads[400:]


def test_prune_by_age_and_size_suffixes(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    old = time.time_ns() - 10 * 24 * HOUR
    make_dir(rec, 2, per=10, start_ns=old)
    make_dir(rec, 1, per=10)
    code, out = run("recordings", "prune", str(rec), "--keep-days", "5", "--keep-bytes", "20G")
    assert code == 0 and "removed 2 segments" in out and "(age)" in out, out
    assert len(segment_paths(rec)) == 1
    code, out = run("recordings", "prune", str(rec), "--keep-days", "5", "--keep-bytes", "500M")
    assert code == 0 and "removed 0 segments" in out


def test_bad_arguments_exit_2_naming_the_problem(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    make_dir(rec, 1, per=5)
    cases = [
        (["recordings", "prune", str(rec), "--keep-bytes", "20X"], "--keep-bytes"),
        (["recordings", "prune", str(rec), "--keep-bytes", "-5"], "--keep-bytes"),
        (["recordings", "prune", str(rec), "--keep-days", "-1"], "--keep-days"),
        (["recordings", "prune", str(rec), "--keep-days", "soon"], "--keep-days"),
        (["recordings", "compress", str(rec), "--level", "99"], "--level"),
        (["recordings", "du", str(tmp_path / "missing")], "not a recordings directory"),
        (["recordings", "prune", str(tmp_path / "missing"), "--keep-days", "1",
          "--keep-bytes", "1G"], "not a recordings directory"),
        (["recordings", "list", str(tmp_path / "missing")], "no such recording"),
    ]
    for argv, needle in cases:
        code, out = run(*argv)
        assert code == 2, (argv, out)
        assert needle in out, (argv, out)
    assert len(segment_paths(rec)) == 1  # nothing was touched
