"""Bytes per hour of a default paper session, and what they are made of.

    .venv/bin/python bench/recording_size.py [--seconds 300] [--keep DIR]

Copies the repository's supervisor.toml (the default paper config) into a temp dir,
moves the simulator to a free port, runs ``start --detach``, samples ``status`` for the
recorder's CPU share, ``stop``s (the recorder compresses its last segment at stop) and
then reports, extrapolated to one hour:
  - raw bytes (the segments' own size) and bytes on disk (compressed), MB/h;
  - per-topic records and raw bytes, to see WHAT is recorded;
  - the two compression designs side by side on the same records: whole closed segments
    (what the recorder does) and independently compressed frames, one per flush
    interval (200 ms), the alternative that would make every flush durable compressed.
Exit 0 when the bytes on disk extrapolate to at most --goal MB/h (default 15).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.recording import read_recording, segment_paths  # noqa: E402
from shared.recording.format import FRAME_OVERHEAD  # noqa: E402
from shared.recording.index import ensure_index  # noqa: E402

SUPERVISOR = [sys.executable, "-m", "actors.supervisor"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPERVISOR, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=config.parent)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--goal", type=float, default=15.0, help="MB/h on disk")
    ap.add_argument("--keep", type=Path, default=None, help="copy the recordings here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text = (REPO / "supervisor.toml").read_text()
        # Free ports for everything that listens (simulator, dashboard), so the bench
        # runs beside other sessions on the same machine.
        text = re.sub(r"(?m)^port = \d+", lambda _m: f"port = {free_port()}", text)
        config = root / "supervisor.toml"
        config.write_text(text)
        started = cli(config, "start", "--detach")
        if started.returncode != 0:
            print(started.stdout, started.stderr, file=sys.stderr)
            return 1
        t0 = time.monotonic()
        cpu: list[float] = []
        try:
            while time.monotonic() - t0 < args.seconds:
                time.sleep(min(10.0, args.seconds / 6))
                st = cli(config, "status", "--json")
                if st.returncode == 0:
                    doc = json.loads(st.stdout)
                    rec = next(a for a in doc["actors"] if a["name"] == "recorder")
                    cpu.append(float(rec.get("cpu_percent") or 0.0))
        finally:
            stopped = cli(config, "stop")
        if stopped.returncode != 0:
            print("stop:", stopped.stdout, stopped.stderr, file=sys.stderr)
        recdir = root / "recordings"
        paths = segment_paths(recdir)
        first = last = 0
        raw = disk = 0
        for p in paths:
            idx = ensure_index(p)
            assert idx is not None, p
            raw += idx.content_bytes
            disk += p.stat().st_size
            first = min(first or idx.first_ns, idx.first_ns) if idx.records else first
            last = max(last, idx.last_ns)
        hours = (last - first) / 3.6e12
        per_topic: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        flush_frames = 0
        cctx = zstandard.ZstdCompressor(level=3)
        window: list[bytes] = []
        window_start = 0
        for r in read_recording(recdir):
            top = ".".join(r.topic.split(".")[:2])
            size = FRAME_OVERHEAD + len(r.topic) + len(r.payload)
            per_topic[top][0] += 1
            per_topic[top][1] += size
            if r.recv_ns - window_start >= 200_000_000 and window:
                flush_frames += len(cctx.compress(b"".join(window)))
                window = []
            if not window:
                window_start = r.recv_ns
            window.append(r.payload + r.topic.encode() + b"\x00" * FRAME_OVERHEAD)
        if window:
            flush_frames += len(cctx.compress(b"".join(window)))
        if args.keep:
            shutil.copytree(recdir, args.keep, dirs_exist_ok=True)
    mbh = (lambda b: b / hours / 1e6) if hours else (lambda b: 0.0)
    print(f"session: {hours * 3600:.0f}s recorded, {len(paths)} segments")
    print(f"raw (uncompressed) {raw:,} bytes = {mbh(raw):.1f} MB/h")
    print(f"on disk, whole-segment zstd-3 (what the recorder does) {disk:,} bytes = "
          f"{mbh(disk):.2f} MB/h ({raw / disk:.1f}x)")
    print(f"alternative, one zstd-3 frame per 200 ms flush: {flush_frames:,} bytes = "
          f"{mbh(flush_frames):.2f} MB/h ({raw / flush_frames:.1f}x)")
    if cpu:
        print(f"recorder CPU: mean {sum(cpu) / len(cpu):.1f} % of one core "
              f"(max {max(cpu):.1f} %), {len(cpu)} samples")
    print("per topic (records, raw MB/h):")
    for top, (n, b) in sorted(per_topic.items(), key=lambda kv: -kv[1][1]):
        print(f"  {top:<22} {n:>9,}  {mbh(b):7.2f}")
    ok = hours > 0 and mbh(disk) <= args.goal
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
