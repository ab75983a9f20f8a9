"""Bus benchmark: raw pyzmq against our transport, plus a real paper pipeline.

Prints one table per section with the ratio ours/raw where there is a raw floor:

  (a) PUB/SUB throughput through a proxy process (msgs/s, lost)
  (b) request round trip p50/p99 (µs): sync REQ/REP, asyncio REQ→ROUTER, ours
  (c) 4-hop latency p50/p99 (µs): A publishes → proxy → B → request to C → reply to B
  (d) SIGKILL of an actor → its first READY heartbeat (s), 3 kills per actor
  (e) whole-system CPU over 10 s (paper mode, then with the random walk paused)
  (f) RSS of every actor

Every role runs in its own process (multiprocessing "spawn"); "ours" goes through the
real ``python -m bus`` proxy process and a real supervisor (tests/helpers.py Pipeline).

    .venv/bin/python bench/bus.py                  # everything, ~2 minutes
    .venv/bin/python bench/bus.py --only a,b,c     # just the transport part
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

# This file is named bus.py: with its own directory first on sys.path, ``import bus``
# would import this script instead of the bus package. Put the repo root there.
_HERE = Path(__file__).resolve().parent
REPO = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _HERE]
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
import psutil  # noqa: E402
import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402

from bus.auth import BusAuth, ensure_keys, keys_dir_of, load_for  # noqa: E402
from bus.messages import (  # noqa: E402
    SCHEMA_VERSION,
    Ack,
    BookSnapshot,
    CommandReply,
    CommandRequest,
    Envelope,
    Heartbeat,
    Intent,
    IntentAck,
    Packet,
    Ping,
    RiskCommand,
    StatusReply,
    SubmitIntent,
    SupervisorCommand,
    packet_decoder,
    packet_encoder,
)
from bus.transport import (  # noqa: E402
    Publisher,
    RequestClient,
    RequestServer,
    Subscriber,
    new_incarnation,
)
from shared.config import load_config  # noqa: E402
from tests.helpers import Pipeline, base_config, kill_all, write_config  # noqa: E402

HWM = 200_000  # the bus's default (BusConfig.hwm), used on both sides
KILL_ORDER = ("strategy", "risk", "executor", "reconciler", "marketdata")
SPAWN = mp.get_context("spawn")


# --- messages ------------------------------------------------------------------------


def book(symbol: str = "BTCTRY") -> BookSnapshot:
    """A realistic 10-level book, as marketdata publishes it."""
    bids = [(Decimal("2456789") - 13 * i, Decimal("0.01234567") + i) for i in range(10)]
    asks = [(Decimal("2456800") + 13 * i, Decimal("0.07654321") + i) for i in range(10)]
    now = time.time_ns()
    return BookSnapshot(symbol=symbol, bids=bids, asks=asks, source="ws",
                        exchange_ts_ms=now // 1_000_000, recv_wall_ns=now,
                        recv_mono_ns=time.monotonic_ns(), age_ms=3, change_set=123456)


def intent() -> Intent:
    return Intent(intent_id="i-" + "0" * 30, symbol="BTCTRY", side="buy", order_type="limit",
                  price=Decimal("2456789"), quantity=Decimal("0.0005"), reason="bench",
                  ttl_s=5.0, strategy="bench", created_wall_ns=time.time_ns(),
                  book_mono_ns=time.monotonic_ns())


def intent_ack() -> IntentAck:
    return IntentAck(intent_id="i-" + "0" * 30, verdict="approved", reasons=[])


def book_packet_size() -> int:
    env = Envelope(SCHEMA_VERSION, "marketdata", new_incarnation(), 100_000, time.time_ns(),
                   time.monotonic_ns())
    return len(packet_encoder.encode(Packet(env, book())))


def request_size(body: Any) -> int:
    return len(packet_encoder.encode(CommandRequest(uuid.uuid4().hex, "bench", body)))


def reply_size(body: Any) -> int:
    return len(packet_encoder.encode(CommandReply(uuid.uuid4().hex, True, "", body)))


# --- statistics ----------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ratio(ours: float, raw: float) -> str:
    return f"{ours / raw:.2f}" if raw else "-"


# --- proxies ---------------------------------------------------------------------------


def bench_auth(identity: str) -> BusAuth:
    """"ours" runs CURVE like production: keys made once per run in BTCBOT_BENCH_DATA
    (inherited by the spawned role processes), the "raw" floor runs none."""
    return load_for(os.environ["BTCBOT_BENCH_DATA"], identity)


def raw_proxy(xsub_ep: str, xpub_ep: str) -> None:
    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        s.setsockopt(zmq.SNDHWM, HWM)
        s.setsockopt(zmq.RCVHWM, HWM)
        s.setsockopt(zmq.LINGER, 0)
    xsub.bind(xsub_ep)
    xpub.bind(xpub_ep)
    zmq.proxy(xsub, xpub)


class Proxy:
    """Either a raw zmq.proxy process or our ``python -m bus`` process."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.proc: Any = None
        tmp.mkdir(parents=True, exist_ok=True)
        if kind == "raw":
            self.pub_ep, self.sub_ep = f"ipc://{tmp}/raw.in", f"ipc://{tmp}/raw.out"
        else:
            cfg_path = write_config(
                tmp, base_config(tmp, data_dir=os.environ["BTCBOT_BENCH_DATA"]), "bus.toml")
            cfg = load_config(cfg_path)
            self.cfg_path = cfg_path
            self.pub_ep, self.sub_ep = cfg.bus_pub_endpoint, cfg.bus_sub_endpoint

    def __enter__(self) -> Proxy:
        if self.kind == "raw":
            self.proc = SPAWN.Process(target=raw_proxy, args=(self.pub_ep, self.sub_ep),
                                      daemon=True)
            self.proc.start()
            _wait_ipc(self.pub_ep, self.sub_ep)
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bus", "--config", str(self.cfg_path)], cwd=REPO,
                stdin=subprocess.DEVNULL)
            _wait_bus_ready(self.sub_ep)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "raw":
            self.proc.kill()
            self.proc.join(5)
        else:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_ipc(*endpoints: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(e.removeprefix("ipc://")) for e in endpoints):
        if time.monotonic() > deadline:
            raise RuntimeError(f"proxy did not bind {endpoints}")
        time.sleep(0.01)


def _wait_bus_ready(sub_ep: str, timeout: float = 15.0) -> None:
    """The bus process is ready when its own READY heartbeat comes out of it."""
    _wait_ipc(sub_ep, timeout=timeout)
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"hb.bus")
    bench_auth("operator").client(s, "bus")
    s.connect(sub_ep)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if s.poll(100):
                body = packet_decoder.decode(s.recv_multipart()[1]).body
                if isinstance(body, Heartbeat) and body.ready:
                    return
        raise RuntimeError("bus process never sent a READY heartbeat")
    finally:
        s.close(0)
        ctx.term()


# --- (a) throughput --------------------------------------------------------------------


def pub_process(kind: str, ep: str, n: int, size: int, joined: Any, done: Any,
                start_ns: Any) -> None:
    """Warm up on md.book.WARM until the subscriber has joined, then send n messages."""
    ctx = zmq.Context()
    if kind == "raw":
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.connect(ep)
        data = os.urandom(size)

        def warm() -> None:
            sock.send_multipart((b"md.book.WARM", data))
    else:
        pub = Publisher(ctx, ep, "marketdata", new_incarnation(), hwm=HWM,
                        auth=bench_auth("marketdata"))
        warm_body, body = book("WARM"), book()

        def warm() -> None:
            pub.publish(warm_body)
    while not joined.is_set():
        warm()
        time.sleep(0.01)
    time.sleep(0.1)  # let the in-flight warm-ups drain
    start_ns.value = time.monotonic_ns()
    if kind == "raw":
        topic = b"md.book.BTCTRY"
        for _ in range(n):
            sock.send_multipart((topic, data))
    else:
        for _ in range(n):
            pub.publish(body)
    done.wait(60)  # exit only once everything is through (linger would drop the tail)
    if kind != "raw":
        pub.close()  # its socket lives on a shadow context that ctx.destroy cannot see
    ctx.destroy(linger=0)


def sub_process(kind: str, ep: str, n: int, joined: Any, out: Any) -> None:
    """kind: raw (sync SUB), raw-async (zmq.asyncio SUB), ours (Subscriber.recv)."""
    if kind == "raw":
        out.put(_sub_raw_sync(ep, n, joined))
    else:
        out.put(asyncio.run(_sub_async(kind, ep, n, joined)))


def _sub_raw_sync(ep: str, n: int, joined: Any) -> dict[str, Any]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, HWM)
    s.setsockopt(zmq.SUBSCRIBE, b"md.book.")
    s.connect(ep)
    got, last = 0, 0
    while got < n and s.poll(3000):
        topic, _payload = s.recv_multipart()
        if topic == b"md.book.WARM":
            joined.set()
            continue
        got += 1
        last = time.monotonic_ns()
    return {"received": got, "last_ns": last, "gaps_lost": None, "malformed": 0}


async def _sub_async(kind: str, ep: str, n: int, joined: Any) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    got, last = 0, 0
    if kind == "raw-async":
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.RCVHWM, HWM)
        s.setsockopt(zmq.SUBSCRIBE, b"md.book.")
        s.connect(ep)
        while got < n:
            try:
                topic, _payload = await asyncio.wait_for(s.recv_multipart(), 3.0)
            except TimeoutError:
                break
            if topic == b"md.book.WARM":
                joined.set()
                continue
            got += 1
            last = time.monotonic_ns()
        return {"received": got, "last_ns": last, "gaps_lost": None, "malformed": 0}
    sub = Subscriber(ctx, ep, ["md.book."], hwm=HWM, name="bench", auth=bench_auth("strategy"))
    while got < n:
        try:
            topic, packet = await asyncio.wait_for(sub.recv(), 3.0)
        except TimeoutError:
            break
        if topic == "md.book.WARM":
            joined.set()
            continue
        assert isinstance(packet.body, BookSnapshot)
        got += 1
        last = time.monotonic_ns()
    return {"received": got, "last_ns": last, "gaps_lost": sub.stats.lost,
            "malformed": sub.stats.malformed}


def throughput(proxy_kind: str, pub_kind: str, sub_kind: str, n: int, size: int,
               tmp: Path) -> dict[str, Any]:
    with Proxy(proxy_kind, tmp) as proxy:
        joined, done = SPAWN.Event(), SPAWN.Event()
        start_ns, out = SPAWN.Value("q", 0), SPAWN.Queue()
        sub = SPAWN.Process(target=sub_process, args=(sub_kind, proxy.sub_ep, n, joined, out))
        pub = SPAWN.Process(target=pub_process,
                            args=(pub_kind, proxy.pub_ep, n, size, joined, done, start_ns))
        sub.start()
        pub.start()
        res = out.get(timeout=120)
        done.set()
        pub.join(10)
        sub.join(10)
    elapsed = (res["last_ns"] - start_ns.value) / 1e9
    res["rate"] = res["received"] / elapsed if elapsed > 0 else 0.0
    res["lost"] = n - res["received"]
    return res


def section_a(n: int, tmp: Path) -> None:
    size = book_packet_size()
    print(f"\n(a) PUB/SUB throughput through a proxy process: {n:,} messages of {size} B "
          f"(encoded 10x10 BookSnapshot), publisher and subscriber in their own processes")
    runs = [
        ("raw   PUB → zmq.proxy → sync SUB", "raw", "raw", "raw"),
        ("raw   PUB → zmq.proxy → asyncio SUB", "raw", "raw", "raw-async"),
        ("ours  Publisher → bus process → Subscriber.recv", "bus", "ours", "ours"),
    ]
    results = {}
    for label, proxy, pub, sub in runs:
        results[label] = throughput(proxy, pub, sub, n, size, tmp / f"a-{proxy}-{sub}")
    raw_rate = results[runs[0][0]]["rate"]
    raw_async_rate = results[runs[1][0]]["rate"]
    print(f"  {'path':<50}{'msgs/s':>12}{'lost':>8}{'gap-lost':>10}"
          f"{'ours/raw':>10}{'ours/raw-async':>16}")
    for label, *_ in runs:
        r = results[label]
        gl = "-" if r["gaps_lost"] is None else str(r["gaps_lost"])
        print(f"  {label:<50}{r['rate']:>12,.0f}{r['lost']:>8}{gl:>10}"
              f"{ratio(r['rate'], raw_rate):>10}{ratio(r['rate'], raw_async_rate):>16}")
    print("  (throughput ratio ours/raw: the fraction of the raw rate that ours reaches; "
          "'gap-lost' is the Subscriber's own gap count)")


# --- (b) request round trip --------------------------------------------------------------


def server_process(kind: str, ep: str, reply_len: int, ready: Any) -> None:
    if kind == "raw-sync":
        ctx = zmq.Context()
        s = ctx.socket(zmq.REP)
        s.bind(ep)
        reply = os.urandom(reply_len)
        ready.set()
        while True:
            s.recv()
            s.send(reply)
    asyncio.run(_async_server(kind, ep, reply_len, ready))


async def _async_server(kind: str, ep: str, reply_len: int, ready: Any) -> None:
    ctx = zmq.asyncio.Context()
    if kind == "raw-async":
        s = ctx.socket(zmq.ROUTER)
        s.bind(ep)
        reply = os.urandom(reply_len)
        ready.set()
        while True:
            frames = await s.recv_multipart()
            await s.send_multipart([frames[0], b"", reply])

    async def handler(request: CommandRequest) -> Any:
        if isinstance(request.body, SubmitIntent):
            return intent_ack()
        return Ack()

    # risk's channel: (b) pings it, (c) sends SubmitIntent like the strategy does.
    server = RequestServer(ctx, ep, handler, commands=RiskCommand, auth=bench_auth("risk"))
    ready.set()
    await server.serve()


def _start_server(kind: str, ep: str, reply_len: int) -> Any:
    ready = SPAWN.Event()
    p = SPAWN.Process(target=server_process, args=(kind, ep, reply_len, ready), daemon=True)
    p.start()
    if not ready.wait(30):
        raise RuntimeError(f"{kind} server did not start")
    return p


class SyncRttClient:
    def __init__(self, ep: str, payload: bytes) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.connect(ep)
        self.payload = payload

    def run(self, n: int) -> list[float]:
        lat = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            self.sock.send(self.payload)
            self.sock.recv()
            lat.append((time.perf_counter_ns() - t0) / 1000)
        return lat

    def close(self) -> None:
        self.ctx.destroy(linger=0)


class AsyncRttClient:
    """raw-async: zmq.asyncio REQ; ours: RequestClient.request(Ping()). One event loop
    and one socket for all the runs, like the sync client."""

    def __init__(self, kind: str, ep: str, payload: bytes) -> None:
        self.kind, self.ep, self.payload = kind, ep, payload
        self.runner = asyncio.Runner()
        self.runner.run(self._open())

    async def _open(self) -> None:
        self.ctx = zmq.asyncio.Context()
        if self.kind == "raw-async":
            self.sock = self.ctx.socket(zmq.REQ)
            self.sock.connect(self.ep)
        else:
            self.client = RequestClient(self.ctx, self.ep, bench_auth("strategy"), server="risk",
                                        timeout_s=2.0)

    def run(self, n: int) -> list[float]:
        return self.runner.run(self._run(n))

    async def _run(self, n: int) -> list[float]:
        lat = []
        if self.kind == "raw-async":
            for _ in range(n):
                t0 = time.perf_counter_ns()
                await self.sock.send(self.payload)
                await self.sock.recv()
                lat.append((time.perf_counter_ns() - t0) / 1000)
        else:
            body = Ping()
            for _ in range(n):
                t0 = time.perf_counter_ns()
                reply = await self.client.request(body)
                lat.append((time.perf_counter_ns() - t0) / 1000)
            assert isinstance(reply, Ack), reply
        return lat

    def close(self) -> None:
        if self.kind != "raw-async":
            self.client.close()
        self.ctx.destroy(linger=0)
        self.runner.close()


def section_b(n: int, warm: int, rounds: int, tmp: Path) -> None:
    req_len, rep_len = request_size(Ping()), reply_size(Ack())
    print(f"\n(b) request round trip, server in its own process, {n:,} round trips after "
          f"{warm} warm-up, in {rounds} interleaved rounds (ipc; raw payloads {req_len}/"
          f"{rep_len} B like ours)")
    tmp.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(req_len)
    kinds = (("raw-sync", "raw   sync REQ → REP (reference)"),
             ("raw-async", "raw   asyncio REQ → asyncio ROUTER echo"),
             ("ours", "ours  RequestClient(Ping) → RequestServer(Ack)"))
    servers, clients = [], {}
    try:
        for kind, label in kinds:
            ep = f"ipc://{tmp}/{kind}.sock"
            servers.append(_start_server(kind, ep, rep_len))
            clients[label] = (SyncRttClient(ep, payload) if kind == "raw-sync"
                              else AsyncRttClient(kind, ep, payload))
        results: dict[str, list[float]] = {label: [] for label in clients}
        for client in clients.values():
            client.run(warm)
        for _ in range(rounds):  # interleaved, so a load change hits every path alike
            for label, client in clients.items():
                results[label] += client.run(n // rounds)
    finally:
        for c in clients.values():
            c.close()
        for server in servers:
            server.kill()
            server.join(5)
    _latency_table(results, floor="raw   asyncio REQ → asyncio ROUTER echo", target=1.5)


def _latency_table(results: dict[str, list[float]], floor: str, target: float) -> None:
    base = results[floor]
    b50, b99 = pct(base, 50), pct(base, 99)
    print(f"  {'path':<50}{'p50 µs':>9}{'p99 µs':>9}{'mean µs':>9}{'p50 ratio':>11}"
          f"{'p99 ratio':>11}")
    for label, lat in results.items():
        p50, p99 = pct(lat, 50), pct(lat, 99)
        print(f"  {label:<50}{p50:>9.1f}{p99:>9.1f}{statistics.fmean(lat):>9.1f}"
              f"{ratio(p50, b50):>11}{ratio(p99, b99):>11}")
    ours = next(v for k, v in results.items() if k.startswith("ours"))
    r50, r99 = pct(ours, 50) / b50, pct(ours, 99) / b99
    print(f"  ratios vs the asyncio floor; target ≤ {target}: p50 "
          f"{'OK' if r50 <= target else 'OVER TARGET'}, p99 "
          f"{'OK' if r99 <= target else 'OVER TARGET'}")


# --- (c) 4-hop latency ------------------------------------------------------------------


def hop_a(kind: str, ep: str, size: int, joined: Any, conn: Any, ctrl: Any) -> None:
    """A: for each chunk the bench asks for, publish one book, wait for B's word that
    the reply came back, repeat. A chunk of 0 ends it."""
    ctx = zmq.Context()
    if kind == "raw":
        sock = ctx.socket(zmq.PUB)
        sock.connect(ep)
        pad = os.urandom(size - 8)

        def send(warm: bool) -> None:
            topic = b"md.book.WARM" if warm else b"md.book.BTCTRY"
            sock.send_multipart((topic, struct.pack("<q", time.monotonic_ns()) + pad))
    else:
        pub = Publisher(ctx, ep, "marketdata", new_incarnation(), hwm=HWM,
                        auth=bench_auth("marketdata"))
        warm_body, body = book("WARM"), book()

        def send(warm: bool) -> None:
            pub.publish(warm_body if warm else body)
    while not joined.is_set():
        send(True)
        time.sleep(0.02)
    time.sleep(0.2)
    ctrl.send("joined")
    while chunk := ctrl.recv():
        for _ in range(chunk):
            send(False)  # ours: Publisher.envelope() stamps mono_ns just before encoding
            if not conn.poll(5):
                raise RuntimeError("B never answered")
            conn.recv()
        ctrl.send("done")
    if kind != "raw":
        pub.close()  # its socket lives on a shadow context that ctx.destroy cannot see
    ctx.destroy(linger=0)


def hop_b(kind: str, sub_ep: str, c_ep: str, total: int, joined: Any, conn: Any,
          out: Any) -> None:
    out.put(asyncio.run(_hop_b(kind, sub_ep, c_ep, total, joined, conn)))


async def _hop_b(kind: str, sub_ep: str, c_ep: str, total: int, joined: Any,
                 conn: Any) -> list[float]:
    """B: on each book, one request to C; latency = reply here - A's publish stamp."""
    ctx = zmq.asyncio.Context()
    lat: list[float] = []
    if kind == "raw":
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"md.book.")
        sub.connect(sub_ep)
        req = ctx.socket(zmq.REQ)
        req.connect(c_ep)
        payload = os.urandom(request_size(SubmitIntent(intent=intent())))
        await req.send(payload)  # C is up before we say we joined
        await req.recv()
        while len(lat) < total:
            topic, data = await sub.recv_multipart()
            if topic == b"md.book.WARM":
                joined.set()
                continue
            sent = struct.unpack_from("<q", data)[0]
            await req.send(payload)
            await req.recv()
            lat.append((time.monotonic_ns() - sent) / 1000)
            conn.send(None)
    else:
        subscriber = Subscriber(ctx, sub_ep, ["md.book."], hwm=HWM, name="strategy",
                                auth=bench_auth("strategy"))
        client = RequestClient(ctx, c_ep, bench_auth("strategy"), server="risk", timeout_s=2.0)
        await client.request(Ping())
        while len(lat) < total:
            _topic, packet = await subscriber.recv()
            assert isinstance(packet.body, BookSnapshot)
            if packet.body.symbol == "WARM":
                joined.set()
                continue
            reply = await client.request(SubmitIntent(intent=intent()))
            assert isinstance(reply, IntentAck)
            lat.append((time.monotonic_ns() - packet.env.mono_ns) / 1000)
            conn.send(None)
        client.close()
        subscriber.close()
    ctx.destroy(linger=0)
    return lat


class HopRig:
    """Proxy, C, B and A for one kind, started once and driven chunk by chunk."""

    def __init__(self, kind: str, total: int, tmp: Path, stack: ExitStack) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        c_ep = f"ipc://{tmp}/c.sock"
        proxy = stack.enter_context(Proxy("raw" if kind == "raw" else "bus", tmp))
        server = _start_server("raw-async" if kind == "raw" else "ours", c_ep,
                               reply_size(intent_ack()))
        stack.callback(server.join, 5)
        stack.callback(server.kill)
        joined, self.out = SPAWN.Event(), SPAWN.Queue()
        a_conn, b_conn = SPAWN.Pipe()
        self.ctrl, a_ctrl = SPAWN.Pipe()
        self.b = SPAWN.Process(target=hop_b,
                               args=(kind, proxy.sub_ep, c_ep, total, joined, b_conn, self.out))
        self.a = SPAWN.Process(target=hop_a, args=(kind, proxy.pub_ep, book_packet_size(),
                                                   joined, a_conn, a_ctrl))
        self.b.start()
        self.a.start()
        stack.callback(self._join)
        if not self.ctrl.poll(60):
            raise RuntimeError(f"4-hop {kind}: A and B never joined")
        self.ctrl.recv()

    def run(self, n: int) -> None:
        self.ctrl.send(n)
        if not self.ctrl.poll(120):
            raise RuntimeError("4-hop chunk did not finish")
        self.ctrl.recv()

    def finish(self) -> list[float]:
        self.ctrl.send(0)
        return self.out.get(timeout=30)

    def _join(self) -> None:
        for p in (self.a, self.b):
            p.join(10)
            if p.is_alive():
                p.kill()


def section_c(iters: int, warm: int, rounds: int, tmp: Path) -> None:
    print(f"\n(c) 4-hop latency A pub → proxy → B sub → B request → C → reply at B, "
          f"A/B/C/proxy in separate processes, one at a time, {iters:,} iterations after "
          f"{warm} warm-up, in {rounds} interleaved rounds")
    kinds = (("raw", "raw   PUB→zmq.proxy→asyncio SUB→REQ→ROUTER echo"),
             ("ours", "ours  Publisher→bus→Subscriber→RequestClient→Server"))
    results = {}
    with ExitStack() as stack:
        rigs = {label: HopRig(kind, warm + iters // rounds * rounds, tmp / f"c-{kind}", stack)
                for kind, label in kinds}
        for rig in rigs.values():
            rig.run(warm)
        for _ in range(rounds):
            for rig in rigs.values():
                rig.run(iters // rounds)
        for label, rig in rigs.items():
            results[label] = rig.finish()[warm:]
    _latency_table(results, floor=kinds[0][1], target=1.5)


# --- (d)(e)(f) the real pipeline --------------------------------------------------------


async def _status(client: RequestClient) -> dict[str, Any]:
    reply = await client.request(SupervisorCommand(command="status"), timeout_s=1.0, retries=0)
    assert isinstance(reply, StatusReply)
    return json.loads(reply.json)


async def _restarts(cfg_path: Path, rounds: int) -> list[dict[str, Any]]:
    """SIGKILL each actor; time kill → first READY heartbeat of the new pid (seen on
    the bus) and kill → status showing the new pid READY (polled every 20 ms)."""
    cfg = load_config(cfg_path)
    ctx = zmq.asyncio.Context()
    op = load_for(cfg.data_path, "operator")
    sub = Subscriber(ctx, cfg.bus_sub_endpoint, ["hb."], hwm=HWM, name="bench", auth=op)
    client = RequestClient(ctx, cfg.supervisor_endpoint, op, server="supervisor", timeout_s=1.0,
                           retries=0)
    seen: dict[str, tuple[int, bool, int]] = {}  # actor -> (pid, ready, when ns)

    async def listen() -> None:
        while True:
            _t, packet = await sub.recv()
            hb = packet.body
            if isinstance(hb, Heartbeat):
                prev = seen.get(hb.actor)
                first_ready = hb.ready and not (prev and prev[0] == hb.pid and prev[1])
                if prev is None or prev[0] != hb.pid or first_ready:
                    seen[hb.actor] = (hb.pid, hb.ready, time.monotonic_ns())

    listener = asyncio.create_task(listen())
    rows = []
    try:
        for r in range(rounds):
            for name in KILL_ORDER:
                doc = await _status(client)
                pid = next(a["pid"] for a in doc["actors"] if a["name"] == name)
                deadline = time.monotonic() + 10
                while seen.get(name, (0,))[0] != pid:  # we hear it, so we will hear the next
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no heartbeat from {name} pid {pid}")
                    await asyncio.sleep(0.01)
                t0 = time.monotonic_ns()
                os.kill(pid, signal.SIGKILL)
                hb_ready = status_ready = None
                deadline = time.monotonic() + 20
                while hb_ready is None or status_ready is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} not READY 20 s after SIGKILL")
                    s = seen.get(name)
                    if hb_ready is None and s and s[0] != pid and s[1]:
                        hb_ready = (s[2] - t0) / 1e9
                    if status_ready is None:
                        try:
                            a = next(a for a in (await _status(client))["actors"]
                                     if a["name"] == name)
                        except Exception:
                            a = {}
                        if a.get("pid") not in (None, pid) and a.get("ready"):
                            status_ready = (time.monotonic_ns() - t0) / 1e9
                    await asyncio.sleep(0.02)
                rows.append({"actor": name, "round": r, "hb": hb_ready, "status": status_ready})
                await asyncio.sleep(0.2)
    finally:
        listener.cancel()
        sub.close()
        client.close()
        ctx.destroy(linger=0)
    return rows


def _ready_in_lines(log: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    pat = re.compile(r"\| (\S+) ready in ([0-9.]+)s")
    for line in log.read_text(errors="replace").splitlines():
        if m := pat.search(line):
            out.setdefault(m.group(1), []).append(float(m.group(2)))
    return out


def _cpu(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float]]:
    """Per process: (% of one core, voluntary context switches a second: wake-ups)."""
    procs, before = {}, {}
    for name, pid in pids.items():
        try:
            procs[name] = psutil.Process(pid)
            procs[name].cpu_percent(None)
            before[name] = procs[name].num_ctx_switches().voluntary
        except psutil.Error:
            pass
    time.sleep(seconds)
    out = {}
    for name, p in procs.items():
        try:
            wake = (p.num_ctx_switches().voluntary - before[name]) / seconds
            out[name] = (p.cpu_percent(None), wake)
        except psutil.Error:
            out[name] = (float("nan"), float("nan"))
    return out


def _walk_off(port: int) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sim/market",
                                 data=b'{"random_walk": false}', method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read())["random_walk"] is False


class PaperPipeline:
    def __init__(self, tmp: Path, **overrides: Any) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.doc = base_config(tmp, **overrides)
        self.cfg_path = write_config(tmp, self.doc)
        self.port = self.doc["simulator"]["port"]
        self.pipe = Pipeline(self.cfg_path)

    def __enter__(self) -> PaperPipeline:
        t0 = time.monotonic()
        self.pipe.start()  # returns once every actor is READY
        self.start_s = time.monotonic() - t0
        status = self.pipe.status()
        self.pids = {a["name"]: a["pid"] for a in status["actors"]}
        self.pids["supervisor"] = status["supervisor"]["pid"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.pipe.stop()
        kill_all(self.cfg_path, self.port)


def section_def(tmp: Path, rounds: int, settle: float, window: float,
                quiet_interval_ms: int) -> None:
    with PaperPipeline(tmp / "paper") as pp:
        print(f"\n(d,e,f) real paper pipeline (tests/helpers.py base_config, book every "
              f"{pp.doc['simulator']['book_interval_ms']} ms; all READY {pp.start_s:.1f} s "
              "after start --detach)")
        time.sleep(settle)
        cpu = {"paper": _cpu(pp.pids, window)}
        _walk_off(pp.port)
        time.sleep(settle)
        cpu["walk off"] = _cpu(pp.pids, window)
        rss = {a["name"]: a["rss_bytes"] for a in pp.pipe.status()["actors"]}
        rss["supervisor"] = psutil.Process(pp.pids["supervisor"]).memory_info().rss
        rows = asyncio.run(_restarts(pp.cfg_path, rounds))
        ready_log = _ready_in_lines(pp.cfg_path.parent / "logs" / "supervisor.log")
        rss_after = {a["name"]: a["rss_bytes"] for a in pp.pipe.status()["actors"]}
        pids = pp.pids
    if quiet_interval_ms:
        with PaperPipeline(tmp / "quiet",
                           simulator={"book_interval_ms": quiet_interval_ms}) as qp:
            _walk_off(qp.port)
            time.sleep(settle)
            cpu[f"book {quiet_interval_ms}ms"] = _cpu(qp.pids, window)

    print(f"\n(d) SIGKILL → first READY heartbeat of the new process, {rounds} kills per actor"
          " (hb: the new pid's first ready heartbeat seen on the bus; status: status shows"
          " the new pid ready, polled every 20 ms; log: supervisor's 'ready in' = spawn →"
          " ready); seconds")
    print(f"  {'actor':<12}{'hb med':>9}{'hb max':>9}{'status med':>12}{'status max':>12}"
          f"{'log med':>10}{'log max':>10}")
    all_hb, all_st = [], []
    for name in KILL_ORDER:
        hb = [r["hb"] for r in rows if r["actor"] == name]
        st = [r["status"] for r in rows if r["actor"] == name]
        lg = ready_log.get(name, [])[-rounds:]  # the first line is the initial start
        all_hb += hb
        all_st += st
        print(f"  {name:<12}{statistics.median(hb):>9.3f}{max(hb):>9.3f}"
              f"{statistics.median(st):>12.3f}{max(st):>12.3f}"
              f"{statistics.median(lg) if lg else float('nan'):>10.3f}"
              f"{max(lg) if lg else float('nan'):>10.3f}")
    med = statistics.median(all_hb)
    print(f"  {'all':<12}{med:>9.3f}{max(all_hb):>9.3f}{statistics.median(all_st):>12.3f}"
          f"{max(all_st):>12.3f}   target median ≤ 1.5 s: "
          f"{'OK' if med <= 1.5 else 'OVER TARGET'}")

    print(f"\n(e) CPU % of one core over {window:.0f} s after {settle:.0f} s settling, and "
          "wake-ups/s (voluntary context switches), per process")
    cols = list(cpu)
    print(f"  {'process':<14}" + "".join(f"{c + ' cpu%':>18}{'wk/s':>7}" for c in cols))
    for name in pids:
        print(f"  {name:<14}" + "".join(
            f"{cpu[c].get(name, (0, 0))[0]:>18.2f}{cpu[c].get(name, (0, 0))[1]:>7.0f}"
            for c in cols))
    totals = {}
    for label, skip in (("total", ()), ("total w/o sim", ("exchange-sim",))):
        totals[label] = [sum(v[0] for k, v in cpu[c].items() if k not in skip) for c in cols]
        print(f"  {label:<14}" + "".join(f"{t:>18.2f}{'':>7}" for t in totals[label]))
    bot = totals["total w/o sim"]
    print("  target < 5 % of one core, bot processes (w/o sim): " + ", ".join(
        f"{c} {'OK' if t < 5 else 'OVER TARGET'}" for c, t in zip(cols, bot, strict=True)))
    print("  (the simulator publishes a book every book interval even with the walk off, so "
          "'walk off' still carries book traffic; the last column is a quiet market)")

    print("\n(f) RSS MB (status --json rss_bytes; supervisor via psutil)")
    print(f"  {'process':<14}{'at start':>10}{'after kills':>13}")
    for name, b in rss.items():
        after = rss_after.get(name)
        print(f"  {name:<14}{b / 1e6:>10.1f}{(after / 1e6 if after else float('nan')):>13.1f}")
    worst = max(max(v for k, v in rss.items() if k != "supervisor"),
                max(rss_after.values()))
    print(f"  target < 60 MB each: {'OK' if worst < 60e6 else 'OVER TARGET'} "
          f"(max actor {worst / 1e6:.1f} MB)")


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000, help="(a) message count")
    ap.add_argument("--round-trips", type=int, default=5_000, help="(b) timed round trips")
    ap.add_argument("--hops", type=int, default=2_000, help="(c) timed iterations")
    ap.add_argument("--rounds", type=int, default=5,
                    help="(b)(c) raw and ours alternate in this many rounds")
    ap.add_argument("--kill-rounds", type=int, default=3, help="(d) kills per actor")
    ap.add_argument("--settle", type=float, default=5.0, help="(e) settling seconds")
    ap.add_argument("--window", type=float, default=10.0, help="(e) CPU window seconds")
    ap.add_argument("--quiet-interval-ms", type=int, default=1000,
                    help="(e) book interval of the extra quiet-market run (0: skip it)")
    ap.add_argument("--only", default="a,b,c,d", help="sections: a,b,c,d (d = d+e+f)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    started = time.monotonic()
    load = os.getloadavg()
    print(f"bench/bus.py  python {sys.version.split()[0]}  pyzmq {zmq.pyzmq_version()}  "
          f"libzmq {zmq.zmq_version()}  msgspec {msgspec.__version__}  "
          f"cores {os.cpu_count()}  loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="bbus-"))
    os.environ["BTCBOT_BENCH_DATA"] = str(tmp / "keys-data")
    ensure_keys(keys_dir_of(tmp / "keys-data"))
    try:
        if "a" in only:
            section_a(args.messages, tmp)
        if "b" in only:
            section_b(args.round_trips, 500, args.rounds, tmp / "b")
        if "c" in only:
            section_c(args.hops, 200, args.rounds, tmp)
        if "d" in only:
            section_def(tmp / "pipe", args.kill_rounds, args.settle, args.window,
                        args.quiet_interval_ms)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    print(f"\ntotal runtime {time.monotonic() - started:.1f} s; loadavg at end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
