"""``btcbot-exchange-sim`` / ``python -m exchange_sim``: run the simulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from .app import ExposureError, start_simulator
from .fees import FeeScheduleError, parse_schedule
from .options import DEFAULT_API_KEY, DEFAULT_API_SECRET, parse_balances
from .state_store import StateError


async def _serve(host: str, port: int, options: dict[str, object]) -> None:
    handle = await start_simulator(host, port, **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Tests and the supervisor wait for this exact line before connecting.
    print(f"exchange-sim listening on {handle.base_url} ws={handle.ws_url}", flush=True)
    await stop.wait()
    await handle.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int, help="0 = any free port")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--api-key", "api_keys", multiple=True, help="repeatable; pairs with --api-secret")
@click.option("--api-secret", "api_secrets", multiple=True, help="base64 secret")
@click.option("--read-only-key", "read_only_keys", multiple=True,
              help="repeatable; a configured key that may read but not place or cancel orders")
@click.option("--book-interval-ms", default=250, show_default=True, type=int)
@click.option("--balances", default=None, help="e.g. TRY=100000,BTC=0.5 (a new account only)")
@click.option("--no-random-walk", is_flag=True, help="start with the book walk paused")
@click.option(
    "--nonce-window-ms",
    default=1000,
    show_default=True,
    type=int,
    help="accept out-of-order unique stamps this far back (0 = strictly increasing)",
)
@click.option(
    "--fee-schedule",
    default=None,
    help="maker/taker tiers by 30-day quote volume, VOLUME:MAKER/TAKER,... "
    "(default 0:0.0005/0.0009, ccxt's flat BTCTurk fees)",
)
@click.option(
    "--no-rate-limits",
    is_flag=True,
    help="turn off BTCTurk's documented rate limits (429); on by default",
)
@click.option(
    "--state",
    "state_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="persist the account in this SQLite file and continue it on restart "
    "(default: in memory)",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="allow a non-loopback --host; the /sim/ admin API then requires --admin-token",
)
@click.option(
    "--admin-token",
    default=None,
    envvar="BTCBOT_SIM_ADMIN_TOKEN",
    help="bearer token for /sim/ (env BTCBOT_SIM_ADMIN_TOKEN); only with --allow-remote",
)
def main(
    host: str,
    port: int,
    seed: int,
    api_keys: tuple[str, ...],
    api_secrets: tuple[str, ...],
    book_interval_ms: int,
    balances: str | None,
    no_random_walk: bool,
    nonce_window_ms: int,
    fee_schedule: str | None,
    no_rate_limits: bool,
    state_path: str | None,
    allow_remote: bool,
    admin_token: str | None,
    read_only_keys: tuple[str, ...],
) -> None:
    """Simulated BTCTurk exchange on loopback (REST + WebSocket + /sim admin API)."""
    if len(api_keys) != len(api_secrets):
        raise click.UsageError("--api-key and --api-secret must be given in pairs")
    credentials = dict(zip(api_keys, api_secrets, strict=True)) or {
        DEFAULT_API_KEY: DEFAULT_API_SECRET
    }
    try:
        parsed_balances = parse_balances(balances)
    except (ValueError, ArithmeticError) as exc:
        raise click.UsageError(f"--balances: {exc}") from exc
    try:
        tiers = parse_schedule(fee_schedule) if fee_schedule else None
    except FeeScheduleError as exc:
        raise click.UsageError(f"--fee-schedule: {exc}") from exc
    shown = ", ".join(f"{k}={v}" for k, v in parsed_balances.items())
    click.echo(
        f"exchange-sim: seed={seed} book_interval_ms={book_interval_ms} "
        f"random_walk={not no_random_walk} nonce_window_ms={nonce_window_ms} "
        f"rate_limits={not no_rate_limits} state={state_path or 'memory'}\n"
        f"exchange-sim: api keys={list(credentials)} "
        f"(default key {DEFAULT_API_KEY!r} secret {DEFAULT_API_SECRET!r})\n"
        f"exchange-sim: balances {shown}"
        + (" (ignored: the state file's account continues)" if state_path
           and os.path.exists(state_path) else ""),
        err=True,
    )
    options: dict[str, object] = {
        "seed": seed,
        "credentials": credentials,
        "book_interval_ms": book_interval_ms,
        "balances": parsed_balances,
        "random_walk": not no_random_walk,
        "nonce_window_ms": nonce_window_ms,
        "rate_limits": not no_rate_limits,
        "fee_tiers": tiers,
        "state_path": state_path,
        "allow_remote": allow_remote,
        "admin_token": admin_token if allow_remote else None,
        "read_only_keys": frozenset(read_only_keys),
    }
    try:
        asyncio.run(_serve(host, port, options))
    except (ExposureError, StateError) as exc:
        click.echo(f"exchange-sim: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"exchange-sim: cannot listen on {host}:{port}: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
