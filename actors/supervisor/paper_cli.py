"""``btcbot-supervisor paper ...``: the paper account's commands (registered by cli.py)."""

from __future__ import annotations

import sys

import click

from actors.supervisor.core import InstanceLock
from actors.supervisor.paper_reset import ResetRefused, check_idle, execute, plan_reset
from shared.config import ConfigError, load_config


@click.group()
def paper() -> None:
    """The paper-trading account (the simulator's account and the executor's DB)."""


@paper.command("reset")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def reset(ctx: click.Context, yes: bool) -> None:
    """Start a fresh paper account: archive the executor DB and the simulator's state
    together under data/archive/, with a timestamp. Refused while the pipeline runs."""
    try:
        cfg = load_config(ctx.obj["config"], mode="paper")
    except ConfigError as exc:
        click.echo(f"btcbot-supervisor: config error: {exc}", err=True)
        sys.exit(2)
    try:
        check_idle(cfg, InstanceLock(cfg).is_held())
    except ResetRefused as exc:
        click.echo(f"btcbot-supervisor: paper reset refused: {exc}", err=True)
        sys.exit(1)
    plan = plan_reset(cfg)
    if not plan.moves:
        click.echo("paper account already empty: nothing to archive")
        return
    for src, _ in plan.moves:
        click.echo(f"  {src}")
    if not yes and not click.confirm(f"archive these into {plan.archive_dir}?", default=False):
        click.echo("btcbot-supervisor: paper reset aborted", err=True)
        sys.exit(1)
    execute(plan)
    click.echo(f"paper account reset; the old one is in {plan.archive_dir}")
