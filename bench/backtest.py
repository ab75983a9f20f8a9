"""Backtest speed: book updates processed per second on one core, and the wall time for
one hour of three-symbol market data (goal: under 10 s).

    .venv/bin/python bench/backtest.py [--minutes 60] [--strategy profit_aware]

Writes a synthetic recording (backtest/data.py: three symbols, a 10-level book each
every 250 ms, as marketdata publishes the simulator's; 43,200 book updates per hour)
and runs the backtest on it in this process, timing (1) reading and decoding the
recording and (2) the engine, separately and together. Exit 0 when the whole run of an
hour (scaled from --minutes) takes under 10 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.strategy.loader import load_strategy  # noqa: E402
from backtest.data import market_messages, write_synthetic  # noqa: E402
from backtest.engine import Backtest  # noqa: E402
from shared.config import Config  # noqa: E402

SYMBOLS = ["BTCTRY", "ETHTRY", "SOLTRY"]
GOAL_S = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--strategy", default="profit_aware")
    args = ap.parse_args()
    cfg = Config()
    cfg.mode = "paper"
    cfg.strategy.plugin = args.strategy
    if args.strategy == "inventory_mm":
        cfg.risk.max_open_orders_per_symbol = 2
        cfg.risk.cooldown_s = 1.0
    with tempfile.TemporaryDirectory(prefix="btcbot-bench-backtest-") as tmp:
        write_synthetic(tmp, symbols=SYMBOLS, seconds=args.minutes * 60)
        t0 = time.perf_counter()
        messages = list(market_messages([tmp]))
        t1 = time.perf_counter()
        result = Backtest(cfg, load_strategy(cfg.strategy)).run(messages)
        t2 = time.perf_counter()
    read_s, run_s = t1 - t0, t2 - t1
    total = read_s + run_s
    per_hour = total * 60 / args.minutes
    print(f"{args.minutes:.0f} min of {len(SYMBOLS)}-symbol data: {result.books} book "
          f"updates, {len(result.orders)} orders, {len(result.fills)} fills "
          f"({args.strategy})")
    print(f"read+decode {read_s:.2f} s ({result.books / read_s:,.0f} books/s), engine "
          f"{run_s:.2f} s ({result.books / run_s:,.0f} books/s), together "
          f"{result.books / total:,.0f} books/s")
    print(f"one hour of three-symbol data: {per_hour:.2f} s (goal < {GOAL_S:.0f} s)")
    return 0 if per_hour < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
