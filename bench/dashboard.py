"""What the dashboard costs at idle: CPU of the dashboard process (and of the supervisor,
which answers its status polls) over a window, with no browser and with two browsers
connected, on an ordinary paper pipeline.

    .venv/bin/python bench/dashboard.py [--seconds 30]

Two real headless chromium processes (bench/browsers.py) sit on the Markets and Overview
pages (the two heaviest: charts and the status-driven overview), following the live
updates. CPU is psutil's user+system time of the process over the window, as a
percentage of one core. Target: < 5 % of a core for the dashboard with two browsers.
For the tick-to-order cost, see ``bench/latency.py --dashboard``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.browsers import browsers  # noqa: E402
from tests.helpers import Pipeline, base_config, free_port, kill_all, write_config  # noqa: E402


def cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    before = {n: p.cpu_times() for n, p in procs.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    out = {}
    for n, p in procs.items():
        after = p.cpu_times()
        used = (after.user - before[n].user) + (after.system - before[n].system)
        out[n] = 100.0 * used / wall
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="btcbot-dashboard-bench-"))
    doc = base_config(tmp, dashboard={"port": free_port()})
    doc["actors"]["dashboard"] = {"enabled": True}
    p = Pipeline(write_config(tmp, doc))
    p.start()
    try:
        url = p.cli("dashboard").stdout.strip()
        time.sleep(5.0)  # past the start-up burst
        pids = {"dashboard": p.actor("dashboard")["pid"], "supervisor": p.supervisor_pid()}
        idle = cpu_percent(pids, args.seconds)
        with browsers(url, ["markets", "overview"]):
            watched = cpu_percent(pids, args.seconds)
            clients = p.actor("dashboard")["counters"].get("clients", 0)
        print(f"event streams open while measuring: {clients} (2 expected)")
        print(f"CPU % of one core over {args.seconds:.0f} s ({psutil.cpu_count()} CPUs, "
              f"load average {psutil.getloadavg()[0]:.2f}):")
        for name in pids:
            print(f"  {name:<11} no browser {idle[name]:5.2f} %   two browsers "
                  f"{watched[name]:5.2f} %")
        ok = watched["dashboard"] < 5.0
        print(f"target (dashboard < 5 % of a core with two browsers): {'MET' if ok else 'MISSED'}")
    finally:
        p.stop()
        kill_all(p.config, doc["simulator"]["port"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
