"""What every ``btcbot-supervisor`` command module needs: exit codes, ``fail``, loading
the config, and running the supervisor in this process. Its own module so that command
modules (``backtest_cli``) and ``cli`` (which registers them) both import it, and neither
imports the other."""

from __future__ import annotations

import asyncio
import sys
from typing import NoReturn

import click
from loguru import logger

from actors.supervisor.core import AlreadyRunning, Supervisor
from actors.supervisor.logtail import Follower, format_line
from shared.actorspec import spec as actor_spec
from shared.config import Config, ConfigError, load_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"btcbot-supervisor: {message}", err=True)
    sys.exit(code)


def load(ctx: click.Context, mode: str | None = None) -> Config:
    try:
        return load_config(ctx.obj["config"], mode=mode)
    except ConfigError as exc:
        fail(f"config error: {exc}", EXIT_USAGE)


async def run_supervisor(cfg: Config, *, foreground: bool) -> int:
    sup = Supervisor(cfg, foreground=foreground)
    printer = asyncio.create_task(print_logs(cfg, list(sup.children))) if foreground else None
    try:
        return await sup.run()
    except AlreadyRunning as exc:
        logger.error(str(exc))
        return EXIT_LOCKED
    finally:
        if printer is not None:
            printer.cancel()


async def print_logs(cfg: Config, names: list[str]) -> None:
    """Foreground mode: every actor's log lines, prefixed and coloured."""
    width = max(len(n) for n in names)
    followers = {n: Follower(cfg.log_path / actor_spec(n).log_name) for n in names}
    while True:
        for i, (name, follower) in enumerate(followers.items()):
            for line in follower.poll():
                click.echo(format_line(name, line, width, i))
        await asyncio.sleep(0.1)
