"""The bus proxy alone: how many messages a second ``bus.proxy.FrameProxy`` forwards with
CURVE on both sides and every frame checked against its publisher's role, and what each
costs in CPU, per thread.

    .venv/bin/python bench/proxy.py [--messages 200000] [--publishers 2] [--rounds 3]
                                    [--size 600] [--io-threads 1]

The proxy runs in this process (as in ``python -m bus``: its own thread, one zmq context);
PUBLISHERS publisher processes (the marketdata key, topic ``md.book.BTCTRY``) send as fast
as they can, one subscriber process (the recorder key) counts. Per round it prints the
subscriber's receive rate and the CPU time the proxy's threads spent per message: the
Python loop (``proxy``) and libzmq's I/O threads (``ZMQbg/IO/*``: framing and the CURVE
crypto of both sides). To compare two versions of the proxy, run this script alternately
with each on ``PYTHONPATH`` (the numbers move with the machine's load: compare rounds run
under the same load, and quote ``uptime`` beside them).
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus.auth import ensure_keys, keys_dir_of, load_for  # noqa: E402
from bus.proxy import FrameProxy  # noqa: E402
from bus.roles import IDENTITIES  # noqa: E402

PUBLISHER = r"""
import sys, time, zmq
from zmq.utils.monitor import recv_monitor_message
from bus.auth import load_for
data, endpoint, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = zmq.Context()
sock = ctx.socket(zmq.PUB)
sock.setsockopt(zmq.SNDHWM, 0)
load_for(data, "marketdata").client(sock, "bus")
events = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
sock.connect(endpoint)
recv_monitor_message(events)
sock.disable_monitor()
events.close()
time.sleep(0.3)  # the proxy's subscription follows the handshake
print("connected", flush=True)
sys.stdin.readline()  # go: the subscriber is joined
topic, payload, more = b"md.book.BTCTRY", b"p" * size, zmq.SNDMORE
send = sock.send
for _ in range(n):
    send(topic, more)
    send(payload)
sock.close(linger=30_000)
ctx.term()
"""

SUBSCRIBER = r"""
import sys, time, zmq
from bus.auth import load_for
data, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = zmq.Context()
sock = ctx.socket(zmq.SUB)
sock.setsockopt(zmq.RCVHWM, 0)
sock.setsockopt(zmq.SUBSCRIBE, b"")
load_for(data, "recorder").client(sock, "bus")
sock.connect(endpoint)
print("ready", flush=True)
recv = sock.recv_multipart
while True:  # the probes the parent sends until we are joined
    if recv()[0] == b"md.book.GO":
        break
print("joined", flush=True)
got, first, last = 0, 0.0, 0.0
while got < n and sock.poll(15_000):
    recv()
    got += 1
    if got == 1:
        first = time.monotonic()
last = time.monotonic()
print(got, first, last, flush=True)
sock.close(linger=0)
ctx.term()
"""


def thread_cpu(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in psutil.Process(pid).threads():
        try:
            comm = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            continue
        out[f"{comm}[{t.id}]"] = t.user_time + t.system_time
    return out


def one_round(data: Path, n: int, publishers: int, size: int, io_threads: int,
              tmp: Path) -> dict[str, float]:
    ctx = zmq.Context(io_threads=io_threads)
    bus = load_for(data, "bus")
    proxy = FrameProxy(ctx, f"ipc://{tmp}/in", f"ipc://{tmp}/out", hwm=0, auth=bus)
    proxy.start()
    assert proxy._thread is not None
    proxy_tid = proxy._thread.native_id
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(data), f"ipc://{tmp}/out",
                            str(n)], stdout=subprocess.PIPE, text=True, env=env)
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "ready"
    # Join: a probe from marketdata's key until the subscriber has seen one.
    probe = ctx.socket(zmq.PUB)
    load_for(data, "marketdata").client(probe, "bus")
    probe.connect(f"ipc://{tmp}/in")
    pubs = [subprocess.Popen([sys.executable, "-c", PUBLISHER, str(data), f"ipc://{tmp}/in",
                              str(n // publishers), str(size)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)
            for _ in range(publishers)]
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, "the subscriber never joined"
        probe.send_multipart([b"md.book.GO", b""])
        if select.select([sub.stdout], [], [], 0.05)[0]:
            assert sub.stdout.readline().strip() == "joined"
            break
    for p in pubs:  # each publisher has the proxy's subscription (no slow joiner)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "connected"
    before = thread_cpu(os.getpid())
    start_forwarded = proxy.counters["proxy_forwarded"]
    for p in pubs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    line = sub.stdout.readline().split()
    after = thread_cpu(os.getpid())
    for p in pubs:
        p.wait(60)
    sub.wait(10)
    forwarded = proxy.counters["proxy_forwarded"] - start_forwarded
    proxy.stop()
    probe.close(linger=0)
    proxy.close()
    bus.close()
    ctx.term()
    got, first, last = int(line[0]), float(line[1]), float(line[2])
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    loop = sum(v for k, v in spent.items() if k.endswith(f"[{proxy_tid}]"))
    io = sum(v for k, v in spent.items() if k.startswith("ZMQbg/IO"))
    return {"got": got, "forwarded": forwarded, "rate": got / max(last - first, 1e-9),
            "loop_us": loop / max(forwarded, 1) * 1e6, "io_us": io / max(forwarded, 1) * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=600, help="payload bytes")
    ap.add_argument("--io-threads", type=int, default=1, help="the proxy context's")
    args = ap.parse_args()
    n = args.messages // args.publishers * args.publishers
    rows = []
    with tempfile.TemporaryDirectory(prefix="btcbot-proxy-bench-") as tmp:
        data = Path(tmp) / "data"
        ensure_keys(keys_dir_of(data), IDENTITIES)
        for i in range(args.rounds):
            r = one_round(data, n, args.publishers, args.size, args.io_threads, Path(tmp))
            rows.append(r)
            print(f"round {i + 1}: {r['got']:,}/{n:,} received ({r['forwarded']:,} "
                  f"forwarded), {r['rate']:,.0f} msg/s; proxy "
                  f"CPU per message: loop {r['loop_us']:.2f} us, I/O threads "
                  f"{r['io_us']:.2f} us", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("rate", "loop_us", "io_us")}
    print(f"median: {med['rate']:,.0f} msg/s, loop {med['loop_us']:.2f} us/msg, I/O "
          f"{med['io_us']:.2f} us/msg (load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    return 0 if all(r["got"] == n for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
