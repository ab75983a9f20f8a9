"""Executor benchmark against the simulator (real processes, DB durability on).

    .venv/bin/python bench/executor.py [--orders 300] [--concurrency 8] [--sync FULL]

Measures, for resting limit orders (no fills):
- accepted→exchange latency: from the moment the caller holds the OrderAck "accepted"
  (time.monotonic_ns in this process) to the simulator's received_mono_ns for that
  client order id (CLOCK_MONOTONIC is system-wide on Linux, so both are comparable).
  The order is written before the reply (the executor yields once to its send task),
  so this is usually negative;
- request→ack round trip (validation + durable reservation + reply);
- sustained accepted orders per second with N concurrent callers, until every order
  is COMMITTED.
The client-side rate limiter is disabled (BTCTurk allows 10 submits/s; with it on the
sustained rate is that limit, not the executor's).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bus.messages import OrderAck, SnapshotQuery, SubmitOrder  # noqa: E402
from bus.transport import RequestClient  # noqa: E402
from tests.executor_harness import Rig, order  # noqa: E402
from tests.sim_fixtures import start_sim_process  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def run(rig: Rig, n: int, concurrency: int, tag: str) -> tuple[dict, float, list]:
    acks: dict[str, int] = {}
    rtts: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(order(f"BTCTRY-buy-{tag}-{i}", price="1000000", qty="0.0001"))

    async def worker() -> None:
        client = RequestClient(rig.ctx, rig.cfg.command_endpoint("executor"), rig.auth("risk"),
                               server="executor", timeout_s=5.0, retries=0)
        while not queue.empty():
            req = queue.get_nowait()
            t0 = time.monotonic_ns()
            ack = await client.request(SubmitOrder(order=req))
            t1 = time.monotonic_ns()
            assert isinstance(ack, OrderAck) and ack.status == "accepted", ack
            acks[req.client_order_id] = t1
            rtts.append((t1 - t0) / 1e6)
        client.close()

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    client = RequestClient(rig.ctx, rig.cfg.command_endpoint("executor"), rig.auth("risk"),
                           server="executor")
    while True:  # until everything is committed
        snap = await client.request(SnapshotQuery())
        if snap.keys.pending == 0 and snap.keys.unknown == 0:
            break
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - start
    client.close()
    return acks, elapsed, rtts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL"])
    args = ap.parse_args()
    sim = start_sim_process()
    tmp = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    rig = Rig(tmp, sim, executor={"db_synchronous": args.sync, "client_rate_limit": False,
                                  "max_orders_per_minute": 0, "max_open_orders_per_symbol": 0,
                                  "order_poll_interval_s": 5.0},
              exchange={"rest_url": sim.base_url, "api_key": sim.api_key,
                        "api_secret": sim.api_secret, "timeout_s": 5.0})
    try:
        sim.reset(balances={"TRY": "1000000000"})
        sim.set_walk(False)
        rig.start_bus()
        rig.start_executor()
        for label, n, conc in (("serial", min(args.orders, 200), 1),
                               ("concurrent", args.orders, args.concurrency)):
            acks, elapsed, rtts = asyncio.run(run(rig, n, conc, label))
            recv = {r["newOrderClientId"]: r["received_mono_ns"] for r in sim.received_orders()}
            lat = [(recv[c] - t) / 1e6 for c, t in acks.items() if c in recv]
            print(f"[{label}] orders={n} concurrency={conc} sync={args.sync}")
            print(f"  accepted->exchange ms: p50={pct(lat, 50):.2f} p99={pct(lat, 99):.2f} "
                  f"max={max(lat):.2f} mean={statistics.mean(lat):.2f}")
            print(f"  request->ack ms:       p50={pct(rtts, 50):.2f} p99={pct(rtts, 99):.2f}")
            print(f"  sustained: {n / elapsed:.0f} accepted+committed orders/s "
                  f"({elapsed:.2f}s)")
    finally:
        rig.close()
        sim.stop()


if __name__ == "__main__":
    main()
