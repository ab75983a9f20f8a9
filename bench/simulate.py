"""Speed of the deterministic simulation: simulated seconds per wall second.

    .venv/bin/python bench/simulate.py [--hours 1] [--seeds 1] [--faults default] [--profile F]
                                       [--md-source ws|rest]

Default three-symbol configuration, default faults, one seed after another in this one
process (one core). Each run is ``--hours`` of trading plus the 3 settle minutes; the
figure counts both. Goal (issue 22): >= 360x (a simulated hour in under 10 s).
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from pathlib import Path

# This file is named like the package it measures: without its own directory on the
# path, ``import simulate`` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from simulate.run import Spec, run_here  # noqa: E402

GOAL = 360.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", default="default")
    p.add_argument("--profile", default="", help="write cProfile stats of the run here")
    p.add_argument("--md-source", default="ws", choices=("ws", "rest"),
                   help="marketdata's source (ws: the production default)")
    a = p.parse_args()
    sim = wall = cpu = 0.0
    events = 0
    profiler = cProfile.Profile() if a.profile else None
    for seed in range(a.seed, a.seed + a.seeds):
        started, cpu0 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        r = run_here(Spec(seed, a.hours, a.faults, md_source=a.md_source))
        if profiler is not None:
            profiler.disable()
        took = time.perf_counter() - started
        cpu += time.process_time() - cpu0
        sim += r["sim_seconds"]
        wall += took
        events += r["events"]
        print(f"seed {seed}: {r['sim_seconds']:.0f} sim s in {took:.2f} s "
              f"({r['sim_seconds'] / took:.0f}x), {r['events']} events, orders {r['orders']}, "
              f"fills {r['fills']}, faults {r['faults_injected']}, restarts {r['restarts']}, "
              f"violations {len(r['violations'])}")
    rate = sim / wall
    # On a shared machine the wall figure includes other processes' time slices; the
    # process's own CPU time is the figure for "one core".
    print(f"cpu: {cpu:.2f} s of this process = {sim / cpu:.0f}x per CPU second")
    print(f"total: {sim:.0f} simulated s in {wall:.2f} wall s = {rate:.0f}x "
          f"({events / wall:.0f} traced events/s); one simulated hour ~ {3600 / rate:.1f} s, "
          f"one day ~ {86400 / rate / 60:.1f} min (goal >= {GOAL:.0f}x: "
          f"{'met' if rate >= GOAL else 'NOT met'})")
    if profiler is not None:
        profiler.dump_stats(a.profile)


if __name__ == "__main__":
    main()
