"""The operator-tool commands (preflight, why, incident bundle), registered on the main
CLI group by ``actors/supervisor/cli.py``. Each command is a thin front over its own
module; this file only parses options and prints."""

from __future__ import annotations

import asyncio
import sys

import click

from actors.supervisor.preflight import Report, render_text
from actors.supervisor.preflight_probe import record_arming, run_preflight
from shared.config import Config, ConfigError, load_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _load(ctx: click.Context, mode: str | None = None) -> Config:
    try:
        return load_config(ctx.obj["config"], mode=mode)
    except ConfigError as exc:
        click.echo(f"btcbot-supervisor: config error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@click.command()
@click.option("--mode", type=click.Choice(["dry-run", "paper", "live"]), default=None,
              help="check as this mode (default: the config's)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.pass_context
def preflight(ctx: click.Context, mode: str | None, as_json: bool) -> None:
    """Is it safe to arm live? Each check PASS/WARN/FAIL with why; exit 0 only when
    nothing FAILs."""
    cfg = _load(ctx, mode)
    report = asyncio.run(run_preflight(cfg))
    click.echo(report.to_json().decode() if as_json else render_text(report))
    sys.exit(EXIT_OK if report.ok else EXIT_FAILURE)


def arm_live(cfg: Config) -> Report:
    """``start --mode live``: run preflight, store the report with the arming decision
    in the executor's DB, and refuse (exit 1, the report on stderr) on any FAIL."""
    report = asyncio.run(run_preflight(cfg))
    record_arming(cfg, report, armed=report.ok)
    if not report.ok:
        click.echo(render_text(report), err=True)
        click.echo("btcbot-supervisor: live start refused: preflight FAILed "
                   "(report stored in the DB's arming_records)", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(render_text(report))
    return report
