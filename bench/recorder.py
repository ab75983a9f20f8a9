"""Recorder throughput: a burst of RATE msgs/s for SECONDS through a real bus into a real
recorder process, from PUBLISHERS publisher processes; then the segment files are read
back and every publisher's sequence is checked for gaps.

    .venv/bin/python bench/recorder.py [--rate 50000] [--seconds 10] [--publishers 2]

Exit 0 only when the recorder lost nothing and the sustained rate reached --rate.
Compression is on (the default config): every segment that closes during the burst is
compressed by the recorder's housekeeping thread while it records; use a small
--segment-mb to make that happen within a short run.
The payload is a realistic 10-level BookSnapshot (encoded once; each message gets its
own envelope, as a real publisher's would).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus.messages import packet_decoder  # noqa: E402
from replay.pipeline import IsolatedPipeline, SupervisedPipeline  # noqa: E402
from shared.recording import read_recording, scan_segment, segment_paths  # noqa: E402

PUBLISHER = r"""
import os, sys, time, msgspec, zmq
from decimal import Decimal
from bus.auth import load_for
from bus.messages import SCHEMA_VERSION, BookSnapshot, Envelope, packet_encoder

class Frame(msgspec.Struct, array_like=True):
    env: Envelope
    body: msgspec.Raw

endpoint, name, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
levels = [(Decimal("2500000") + i, Decimal("0.01234567")) for i in range(10)]
body = msgspec.Raw(packet_encoder.encode(BookSnapshot(
    symbol="BTCTRY", bids=levels, asks=levels, source="ws", exchange_ts_ms=1,
    recv_wall_ns=1, recv_mono_ns=1, age_ms=0)))
enc = msgspec.msgpack.Encoder().encode
ctx = zmq.Context()
sock = ctx.socket(zmq.PUB)
sock.setsockopt(zmq.SNDHWM, 1_000_000)
load_for(os.environ["BENCH_DATA"], "marketdata").client(sock, "bus")  # md.book is its
sock.connect(endpoint)
time.sleep(1.0)  # let the bus's subscriptions reach us (slow joiner)
topic, more, clock, mono = b"md.book.BTCTRY", zmq.SNDMORE, time.time_ns, time.monotonic
inc = f"bench-{name}"
seq, batch = 0, 100
start = mono()
total = int(rate * seconds)
while seq < total:
    for _ in range(batch):
        seq += 1
        sock.send(topic, more)
        sock.send(enc(Frame(Envelope(SCHEMA_VERSION, name, inc, seq, clock(), 0), body)))
    ahead = start + seq / rate - mono()
    if ahead > 0:
        time.sleep(ahead)
elapsed = mono() - start
cpu = time.process_time()
print(f"{name}: {seq} msgs in {elapsed:.2f}s ({seq / elapsed:,.0f}/s), "
      f"cpu {cpu:.2f}s ({cpu / seq * 1e6:.1f} us/msg)", flush=True)
sock.close(linger=5000)
ctx.term()
"""


def _thread_cpu(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) per thread, keyed by the thread's name and id."""
    out = {}
    for t in proc.threads():
        try:
            comm = Path(f"/proc/{proc.pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            continue
        label = "main" if t.id == proc.pid else comm
        out[f"{label}[{t.id}]"] = t.user_time + t.system_time
    return out


def _drained(directory: Path, expected: int, timeout_s: float = 30.0) -> None:
    """Wait until the recordings stop growing (the recorder caught up and flushed):
    a fixed sleep would stop a recorder that is behind and count its queue as lost."""
    deadline = time.monotonic() + timeout_s
    last, still = -1, 0
    while time.monotonic() < deadline:
        size = 0
        for p in directory.iterdir():
            try:
                size += p.stat().st_size
            except FileNotFoundError:  # a segment replaced by its compressed form
                pass
        still = still + 1 if size == last else 0
        if still >= 3:  # three flush intervals and more without a byte
            return
        last = size
        time.sleep(0.25)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=50_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--segment-mb", type=int, default=64, help="recorder.segment_max_bytes")
    ap.add_argument("--no-compress", action="store_true", help="recorder.compress = false")
    args = ap.parse_args()
    names = [f"pub{i}" for i in range(args.publishers)]
    per = args.rate / args.publishers
    extra = {"recorder": {"segment_max_bytes": args.segment_mb * 1024 * 1024,
                          "compress": not args.no_compress}}
    with IsolatedPipeline(None, actors=(), record=True, extra=extra) as pipe:
        watched = {name: psutil.Process(pid) for name, pid in pipe.pids().items()
                   if name in ("bus", "recorder")}
        before = {name: _thread_cpu(p) for name, p in watched.items()}
        t0 = time.monotonic()
        pubs = [subprocess.Popen([sys.executable, "-c", PUBLISHER, pipe.cfg.bus_pub_endpoint,
                                  n, str(per), str(args.seconds)],
                                 env={**os.environ, "BENCH_DATA": str(pipe.cfg.data_path)})
                for n in names]
        for p in pubs:
            if p.wait(args.seconds * 4 + 30) != 0:
                print("publisher failed", file=sys.stderr)
                return 1
        _drained(pipe.recordings, args.publishers * int(per * args.seconds))
        cpu_wall = time.monotonic() - t0
        after = {name: _thread_cpu(p) for name, p in watched.items()}
        seqs: dict[str, list[int]] = defaultdict(list)
        times: dict[str, list[int]] = defaultdict(list)
        # Stop without removing the directory (the with block does that after the read):
        # the recorder flushes and closes its segment on the stop.
        SupervisedPipeline.stop(pipe)
        for rec in read_recording(pipe.recordings, ["md.book"]):
            env = packet_decoder.decode(rec.payload).env
            seqs[env.source].append(env.seq)
            times[env.source].append(rec.recv_ns)
        infos = [scan_segment(p) for p in segment_paths(pipe.recordings)]
    expected = int(per * args.seconds)
    ok = True
    total = 0
    first = min(t[0] for t in times.values())
    last = max(t[-1] for t in times.values())
    for n in names:
        got = seqs.get(n, [])
        total += len(got)
        missing = expected - len(set(got))
        in_order = got == list(range(1, len(got) + 1))
        print(f"{n}: recorded {len(got)}/{expected}, missing {missing}, in order {in_order}")
        ok &= missing == 0 and in_order
    # Each publisher's stream as the recorder received it, summed: the concurrent rate
    # (the overall span would also count the publishers' staggered starts).
    rate = sum(len(t) / ((t[-1] - t[0]) / 1e9) for t in times.values() if len(t) > 1)
    raw, disk = sum(i.size for i in infos), sum(i.disk_bytes for i in infos)
    print(f"segments {len(infos)} ({sum(i.compressed for i in infos)} compressed), torn tails "
          f"{sum(i.torn_tail for i in infos)}, raw bytes {raw:,}, on disk {disk:,} "
          f"({raw / max(disk, 1):.1f}x)")
    burst = total / ((last - first) / 1e9)
    print(f"recorder sustained {rate:,.0f} msgs/s; whole burst {burst:,.0f} msgs/s over "
          f"{(last - first) / 1e9:.2f}s "
          f"({total} messages, lost {args.publishers * expected - total})")
    # Where the CPU went from the publishers' start until the recorder had written the
    # last message: per process and per thread (ZMQbg/IO/* are libzmq's I/O threads,
    # which do the CURVE crypto; the others are Python's), per message forwarded.
    span = (last - first) / 1e9
    print(f"cpu from the burst's start until drained ({cpu_wall:.2f}s; shares of a core are "
          f"of the {span:.2f}s receive span), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}:")
    for name in watched:
        spent = {t: after[name].get(t, 0.0) - before[name].get(t, 0.0) for t in after[name]}
        busy = {t: s for t, s in spent.items() if s > 0.005}
        whole = sum(spent.values())
        print(f"  {name}: {whole:.2f}s ({whole / span:.0%} of a core, "
              f"{whole / max(total, 1) * 1e6:.1f} us/msg): " + ", ".join(
                  f"{t} {s:.2f}s" for t, s in sorted(busy.items(), key=lambda kv: -kv[1])))
    ok &= rate >= args.rate * 0.97  # receive span includes the publishers' ramp-up
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
