"""``btcbot-supervisor simulate``: the deterministic simulation (docs/simulation.md)."""

from __future__ import annotations

import json
import os
import sys

import click

from actors.supervisor.cli_common import EXIT_USAGE, fail

# Only the light modules here: the CLI imports this file for every command, and the
# simulation itself (every actor, the simulator) is imported when `simulate` runs.
from simulate.planted import PLANTS
from simulate.profiles import FAULT_KINDS, MD_SOURCES, PROFILES, TRADING


@click.command()
@click.option("--seed", type=int, default=1, show_default=True, help="the first seed")
@click.option("--seeds", type=int, default=1, show_default=True,
              help="how many seeds (seed, seed+1, ...), in parallel processes")
@click.option("--hours", type=float, default=1.0, show_default=True,
              help="simulated hours of trading per seed (then 3 quiet minutes to settle)")
@click.option("--faults", type=click.Choice(sorted(PROFILES)), default="default",
              show_default=True, help="fault profile (rates in docs/simulation.md)")
@click.option("--without", default="", metavar="KIND,...",
              help=f"fault kinds switched off: {', '.join(FAULT_KINDS)}")
@click.option("--trading", type=click.Choice(TRADING), default="default", show_default=True,
              help="default: the configuration's defaults; busy: bench/chaos.py's "
                   "aggressive trading (many more orders in flight)")
@click.option("--md-source", type=click.Choice(MD_SOURCES), default="ws", show_default=True,
              help="marketdata's source: ws (the production default: the public "
                   "WebSocket, REST fallback) or rest (REST polling only)")
@click.option("--plant", type=click.Choice(PLANTS), default=None,
              help="plant a known bug (to show the simulation finds it)")
@click.option("--jobs", type=int, default=None, help="parallel processes (default: CPUs)")
@click.option("--shrink", "do_shrink", is_flag=True,
              help="on a violation, search a shorter fault schedule that still fails")
@click.option("--json", "as_json", is_flag=True, help="machine-readable results")
def simulate(seed: int, seeds: int, hours: float, faults: str, without: str, trading: str,
             md_source: str, plant: str | None, jobs: int | None, do_shrink: bool,
             as_json: bool) -> None:
    """Run the bot's production logic in one process per seed, in virtual time, under
    faults chosen by the seed; check the invariants; exit 1 on a violation and print the
    command line that reproduces it."""
    if seeds < 1 or hours <= 0:
        fail("--seeds must be >= 1 and --hours > 0", EXIT_USAGE)
    off = tuple(k for k in without.split(",") if k)
    if bad := [k for k in off if k not in FAULT_KINDS]:
        fail(f"--without: unknown fault kinds {bad}", EXIT_USAGE)
    from simulate.run import Spec, report, run_many, shrink

    specs = [Spec(seed + i, hours, faults, plant or "", off, trading, md_source)
             for i in range(seeds)]
    results = run_many(specs, jobs or os.cpu_count() or 1)
    failed = [r for r in results if r["violations"]]
    shrunk = None
    if failed and do_shrink:
        first = failed[0]
        spec = next(s for s in specs if s.seed == first["seed"])
        best, best_result = shrink(spec, first)
        shrunk = {"command": best.command(), "result": best_result}
    if as_json:
        doc = results[0] if len(results) == 1 else {
            "runs": results, "seeds": seeds, "failed_seeds": [r["seed"] for r in failed],
            "sim_seconds": sum(r["sim_seconds"] for r in results),
            "wall_seconds": max(r["wall_seconds"] for r in results)}
        if shrunk is not None:
            doc = {**doc, "shrunk": shrunk}
        click.echo(json.dumps(doc, indent=2))
    else:
        for r in results:
            state = "FAIL" if r["violations"] else "ok"
            click.echo(f"seed {r['seed']}: {state}  {r['sim_seconds']:.0f} sim s in "
                       f"{r['wall_seconds']:.1f} s, orders {r['orders']}, fills {r['fills']}, "
                       f"faults {r['faults_injected']}, restarts {r['restarts']}, "
                       f"trace {r['trace_hash']}")
        for r in failed:
            click.echo(report(r), err=True)
        if shrunk is not None:
            click.echo(f"shrunk: {shrunk['command']}", err=True)
    sys.exit(1 if failed else 0)
