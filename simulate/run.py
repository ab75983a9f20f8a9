"""Running simulations: one seed in this process, many seeds in child processes, the
violation report with its reproducer, and the shrinker.

A child process is ``python -m simulate.run`` with ``PYTHONHASHSEED=0``: string hashing
(set and dict-of-set iteration) is then the same in every process, which the trace's
byte-for-byte determinism needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulate.planted import PLANTS, plant
from simulate.profiles import PROFILES
from simulate.world import FAULT_KINDS, MD_SOURCES, TRADING, World

HASH_SEED = "0"


@dataclass(frozen=True)
class Spec:
    seed: int
    hours: float
    faults: str = "default"
    plant: str = ""
    without: tuple[str, ...] = ()  # fault kinds switched off (the shrinker's)
    trading: str = "default"
    md_source: str = "ws"  # marketdata's source (the production default: ws)

    def args(self) -> list[str]:
        out = ["--seed", str(self.seed), "--hours", f"{self.hours:g}", "--faults", self.faults]
        if self.trading != "default":
            out += ["--trading", self.trading]
        if self.md_source != "ws":
            out += ["--md-source", self.md_source]
        if self.plant:
            out += ["--plant", self.plant]
        if self.without:
            out += ["--without", ",".join(self.without)]
        return out

    def command(self) -> str:
        return shlex.join(["btcbot-supervisor", "simulate", *self.args()])


def run_here(spec: Spec) -> dict[str, Any]:
    """One seed in this process (tests; the child's own work)."""
    undo = plant(spec.plant) if spec.plant else None
    try:
        result = World(spec.seed, spec.hours, spec.faults, plant=spec.plant,
                       without=spec.without, trading=spec.trading,
                       md_source=spec.md_source).run().as_json()
    finally:
        if undo is not None:
            undo()
    result["without"] = list(spec.without)
    result["commit"] = commit()
    result["command"] = spec.command()
    return result


def run_child(spec: Spec) -> dict[str, Any]:
    """One seed in a fresh process (``--seeds``: parallel, and hash-seed pinned)."""
    env = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    proc = subprocess.run([sys.executable, "-m", "simulate.run", *spec.args()],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"simulation of seed {spec.seed} failed (exit {proc.returncode}):"
                           f"\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def run_many(specs: list[Spec], jobs: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(run_child, specs))


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def report(result: dict[str, Any]) -> str:
    """The human report of a failed run: everything needed to reproduce it."""
    lines = []
    for v in result["violations"]:
        lines += [
            f"VIOLATION {v['invariant']}: {v['detail']}",
            f"  seed {result['seed']}, commit {result['commit']}, virtual time "
            f"{v['sim_time_s']:.3f} s, faults {result['faults']}"
            + (f", planted {result['plant']}" if result["plant"] else ""),
            "  last events:",
            *(f"    {e}" for e in v["last_events"]),
            f"  reproduce: {result['command']}",
        ]
    return "\n".join(lines)


def shrink(spec: Spec, first: dict[str, Any], budget: int = 16,
           runner: Any = run_child) -> tuple[Spec, dict[str, Any]]:
    """A shorter fault schedule that still breaks the same invariant: fewer hours first
    (the run up to the violation does not depend on when it would have ended), then
    fault kinds switched off one at a time, each kept off when the failure remains."""
    invariant = first["violations"][0]["invariant"]
    best, best_result = spec, first

    def fails(candidate: Spec) -> dict[str, Any] | None:
        result = runner(candidate)
        v = result["violations"]
        return result if v and v[0]["invariant"] == invariant else None

    at_h = first["violations"][0]["sim_time_s"] / 3600
    if at_h < spec.hours:
        shorter = dataclasses.replace(spec, hours=max(0.01, round(at_h + 0.005, 2)))
        budget -= 1
        if shorter.hours < spec.hours and (r := fails(shorter)) is not None:
            best, best_result = shorter, r
    for kind in FAULT_KINDS:
        if budget <= 0 or kind in best.without:
            continue
        candidate = dataclasses.replace(best, without=(*best.without, kind))
        budget -= 1
        if (r := fails(candidate)) is not None:
            best, best_result = candidate, r
    return best, best_result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m simulate.run")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--faults", choices=sorted(PROFILES), default="default")
    p.add_argument("--plant", choices=PLANTS, default="")
    p.add_argument("--without", default="")
    p.add_argument("--trading", choices=TRADING, default="default")
    p.add_argument("--md-source", choices=MD_SOURCES, default="ws")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    # A terminated child exits through Python (its temporary directory is removed).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    a = parse(argv)
    without = tuple(k for k in a.without.split(",") if k)
    print(json.dumps(run_here(Spec(a.seed, a.hours, a.faults, a.plant, without, a.trading,
                                   a.md_source))), flush=True)
    # Done (the run's directory is already removed): no interpreter teardown, which after
    # a stalled run would finalize the abandoned loop's coroutines noisily.
    os._exit(0)


if __name__ == "__main__":
    main()
