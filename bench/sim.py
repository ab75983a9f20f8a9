"""Simulator throughput benchmark: concurrent authenticated submits through the real client.

Starts the simulator as a subprocess (one API key per client, so per-key nonces never
need to run ahead of the clock), fires ``--orders`` limit orders that cross the book
(they fill immediately, so the resting book stays small) from ``--clients`` clients with
``--concurrency`` requests in flight, and prints orders/s and p50/p99 latency.

    .venv/bin/python bench/sim.py --orders 10000 --concurrency 64 --clients 4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import time
from collections import Counter
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.btcturk import BtcTurkClient, BtcTurkError  # noqa: E402
from tests.sim_fixtures import start_sim_process  # noqa: E402


def credentials(n: int) -> list[tuple[str, str]]:
    return [
        (f"bench-key-{i}", base64.b64encode(f"bench-secret-{i}".encode()).decode())
        for i in range(n)
    ]


async def run(args: argparse.Namespace, base_url: str, creds: list[tuple[str, str]]) -> None:
    clients = [BtcTurkClient(base_url, k, s, timeout_s=10.0, rate_limits=False) for k, s in creds]
    book = await clients[0].order_book("BTCTRY", 1)
    ask, bid = book.asks[0].price, book.bids[0].price
    # Cross by 2 % so every order is an immediate taker fill; integer prices (hasFraction no).
    buy_px = (ask * Decimal("1.02")).quantize(Decimal(1), ROUND_DOWN)
    sell_px = (bid * Decimal("0.98")).quantize(Decimal(1), ROUND_DOWN)
    qty = Decimal("0.00003")
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    counter = iter(range(args.orders))

    async def worker(w: int) -> None:
        client = clients[w % len(clients)]
        for i in counter:
            side = "buy" if i % 2 == 0 else "sell"
            started = time.perf_counter()
            try:
                await client.submit_order(
                    "BTCTRY", side, "limit", qty, buy_px if side == "buy" else sell_px, f"bench-{i}"
                )
                outcomes["ok"] += 1
            except BtcTurkError as exc:
                outcomes[f"{type(exc).__name__}:{exc.kind}"] += 1
            latencies.append(time.perf_counter() - started)

    wall = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    wall = time.perf_counter() - wall
    for client in clients:
        await client.close()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"orders={args.orders} concurrency={args.concurrency} clients={len(clients)}")
    print(f"throughput={args.orders / wall:.0f} orders/s wall={wall:.2f}s")
    print(f"latency p50={p50:.2f} ms p99={p99:.2f} ms max={latencies[-1] * 1000:.2f} ms")
    print(f"outcomes={dict(outcomes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    creds = credentials(args.clients)
    extra = [a for k, s in creds for a in ("--api-key", k, "--api-secret", s)]
    sim = start_sim_process(*extra, "--balances", "TRY=1000000000,BTC=1000", "--no-random-walk")
    try:
        asyncio.run(run(args, sim.base_url, creds))
        log = sim.received_orders()
        print(
            f"simulator received {len(log)} orders, "
            f"{sum(1 for e in log if e['outcome'] == 'accepted')} accepted"
        )
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
