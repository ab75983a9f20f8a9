"""``btcbot-supervisor backtest`` and ``record-market``: test a strategy on recorded
market data, and collect such data cheaply (docs/strategies.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click
import msgspec

from actors.supervisor.cli_common import EXIT_USAGE, fail, load, run_supervisor
from shared.config import Config, ConfigError, load_config, to_toml
from shared.logging import setup_logging
from shared.progress import progress, progress_wanted, reached

MARKET_ACTORS = ("bus", "exchange-sim", "marketdata", "recorder")


def _fee(bps: str, name: str) -> Decimal:
    try:
        value = Decimal(bps) / Decimal(10_000)
    except InvalidOperation:
        fail(f"{name}: not a number ({bps!r})", EXIT_USAGE)
    if not value.is_finite() or value < 0:
        fail(f"{name}: must be >= 0 (got {bps!r})", EXIT_USAGE)
    return value


@click.command()
@click.argument("recordings", nargs=-1)
@click.option("--consistency", "session_path", default=None, metavar="RECORDING",
              help="check: a backtest of this paper session's recording with the "
                   "session's timing reproduces its fills and PnL (exit 1 if not)")
@click.option("--strategy", "plugin", default=None,
              help="plug-in (name or package.module:Class); default: strategy.plugin")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="a plug-in parameter (key=value) or a config field (risk.cooldown_s=5)")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...",
              help="run every combination in parallel processes and rank them")
@click.option("--symbols", default="", help="only these symbols (comma separated)")
@click.option("--maker-fee-bps", default=None,
              help="maker fee (default: backtest.maker_fee_bps, 5)")
@click.option("--taker-fee-bps", default=None,
              help="taker fee (default: backtest.taker_fee_bps, 10)")
@click.option("--balances", default=None,
              help="starting balances ASSET=AMOUNT,... (default: backtest.balances)")
@click.option("--json", "as_json", is_flag=True, help="the summary as JSON")
@click.option("--report", "report_path", default=None, metavar="PATH.html|PATH.png",
              help="plots: equity, drawdown, prices with fills, inventory")
@click.option("--workers", type=int, default=None, help="--sweep processes (default: cores)")
@click.pass_context
def backtest(ctx: click.Context, recordings: tuple[str, ...], plugin: str | None,
             sets: tuple[str, ...], sweeps: tuple[str, ...], symbols: str,
             maker_fee_bps: str | None, taker_fee_bps: str | None, balances: str | None,
             as_json: bool, report_path: str | None, workers: int | None,
             session_path: str | None) -> None:
    """Run a strategy over recorded market data (RECORDINGS: segment files or
    directories) with the backtest fill model; print net PnL, drawdown, Sharpe,
    Sortino, turnover, orders, fills and fees. With --consistency RECORDING: compare a
    backtest of that paper session with what the session did (docs/strategies.md)."""
    from backtest import data, report, runner, sweep  # matplotlib and friends: only here

    cfg = load(ctx)
    if session_path is not None:
        if recordings or sweeps or report_path or symbols or balances:
            fail("--consistency RECORDING takes no RECORDINGS, --sweep, --report, "
                 "--symbols or --balances (the session's own are used)", EXIT_USAGE)
        _consistency(cfg, session_path, plugin, sets, maker_fee_bps, taker_fee_bps,
                     as_json)
        return
    if not recordings:
        fail("backtest: RECORDING... (or --consistency RECORDING) required", EXIT_USAGE)
    try:
        opts = runner.Options(
            recordings=list(recordings), plugin=plugin, sets=runner.parse_sets(sets),
            symbols=[s.strip().upper() for s in symbols.split(",") if s.strip()],
            maker_fee=_fee(maker_fee_bps or str(cfg.backtest.maker_fee_bps),
                           "--maker-fee-bps"),
            taker_fee=_fee(taker_fee_bps or str(cfg.backtest.taker_fee_bps),
                           "--taker-fee-bps"),
            balances=runner.parse_balances(balances or cfg.backtest.balances))
        wanted = progress_wanted(as_json)
        if sweeps:
            with progress(len(sweep.grid(sweeps)), "backtest sweep", enabled=wanted) as bar:
                rows = sweep.sweep(cfg, opts, sweeps, workers, done=lambda: bar.update(1))
            if as_json:
                click.echo(report.json.dumps(rows, indent=2, sort_keys=True))
            else:
                click.echo(sweep.render(rows))
            return
        span_s = data.market_span_s(opts.recordings) if wanted else 0
        with progress(span_s, "backtest (recorded seconds)", enabled=wanted) as bar:
            result, summary = runner.run(cfg, opts, reached(bar))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(report.render_json(summary) if as_json else report.render_text(summary))
    if report_path:
        out = report.write_report(report_path, result, summary)
        if not as_json:
            click.echo(f"report: {out}")


def _consistency(cfg: Config, path: str, plugin: str | None, sets: tuple[str, ...],
                 maker_fee_bps: str | None, taker_fee_bps: str | None,
                 as_json: bool) -> None:
    """Strategy-level consistency (backtest/consistency.py, compare_session): exit 0 on
    PASS, 1 on FAIL, 2 when the recording or the options cannot be checked."""
    from actors.strategy.loader import load_strategy
    from backtest import consistency, runner, session
    from backtest.engine import Fees
    from backtest.report import json

    if cfg.simulator.fee_schedule and (maker_fee_bps is None or taker_fee_bps is None):
        fail("--consistency: the session's simulator ran with simulator.fee_schedule "
             f"{cfg.simulator.fee_schedule!r}; give its tier with --maker-fee-bps and "
             "--taker-fee-bps", EXIT_USAGE)
    # [backtest]'s schedule (by default the simulator's) unless told otherwise.
    configured = Fees.of(cfg)
    fees = Fees(_fee(maker_fee_bps, "--maker-fee-bps") if maker_fee_bps else configured.maker,
                _fee(taker_fee_bps, "--taker-fee-bps") if taker_fee_bps else configured.taker)
    if not os.path.exists(path):
        fail(f"--consistency {path}: no such file or directory", EXIT_USAGE)
    try:
        opts = runner.Options(recordings=[path], plugin=plugin, sets=runner.parse_sets(sets))
        run_cfg, plugin_sets = runner.configured(cfg, opts)
        strategy = load_strategy(run_cfg.strategy, plugin_sets)
        result = consistency.compare_session(path, run_cfg, strategy, fees)
    except (ConfigError, session.SessionError) as exc:
        fail(f"--consistency {path}: {exc}", EXIT_USAGE)
    click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True) if as_json
               else result.render())
    sys.exit(0 if result.ok else 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _derived(cfg: Config) -> Config:
    """``cfg`` written to ``<its runtime dir>/record-market.toml`` (every path made
    absolute, so it means the same from there) and loaded back: the supervisor hands its
    children the file, not the object."""
    doc = msgspec.to_builtins(cfg)
    for key in ("base_dir", "source_path"):
        doc.pop(key, None)
    for key in ("runtime_dir", "log_dir", "data_dir"):
        doc[key] = str(cfg.path(doc[key]))
    doc["recorder"]["path"] = str(cfg.path(cfg.recorder.path))
    doc["simulator"]["state_file"] = str(cfg.path(cfg.simulator.state_file))
    doc["executor"]["db_path"] = str(cfg.path(cfg.executor.db_path))
    if cfg.exchange.api_secret_file:
        doc["exchange"]["api_secret_file"] = str(cfg.path(cfg.exchange.api_secret_file))
    runtime = Path(doc["runtime_dir"])
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = runtime / "record-market.toml"
    path.write_text(to_toml(doc))
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(f"config error: {exc}", EXIT_USAGE)


@click.command("record-market")
@click.option("--symbols", required=True, help="comma separated, e.g. BTCTRY,ETHTRY")
@click.option("--out", default="recordings/market", show_default=True,
              help="directory for the segments (relative to the config file)")
@click.option("--duration", type=float, default=0.0, help="stop after this many seconds")
@click.option("--mode", type=click.Choice(["paper", "live"]), default=None,
              help="paper: the simulator's market; live: BTCTurk's public feed (no key)")
@click.pass_context
def record_market(ctx: click.Context, symbols: str, out: str, duration: float,
                  mode: str | None) -> None:
    """Record market data only (books, rules, feed status): the bus, marketdata and the
    recorder, in a runtime dir of their own beside any running bot, no strategy, risk
    or executor. Ctrl-C (or --duration) stops it."""
    cfg = load(ctx, mode)
    wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not wanted:
        fail("--symbols: at least one symbol", EXIT_USAGE)
    cfg.marketdata.symbols = wanted
    for name, spec in cfg.actors.items():
        spec.enabled = name in MARKET_ACTORS
    cfg.recorder.path = out
    cfg.runtime_dir = os.path.join(cfg.runtime_dir, "record-market")
    cfg.log_dir = os.path.join(cfg.log_dir, "record-market")
    cfg.bus.pub_endpoint = cfg.bus.sub_endpoint = ""  # ipc in the runtime dir above
    if cfg.mode == "paper":  # a simulator of its own: another port, an in-memory account
        cfg.simulator.port = _free_port()
        cfg.simulator.state_file = os.path.join(cfg.runtime_dir, "exchange-sim.db")
    if cfg.mode == "live":
        # BTCTurk's public feed, in a mode that can never trade (nothing here could: no
        # executor runs), so live arming is not asked for.
        cfg.exchange.rest_url, cfg.exchange.ws_url = cfg.rest_url, cfg.ws_url
        cfg.mode = "dry-run"
    cfg = _derived(cfg)  # the children read their config from a file: write this one
    setup_logging(cfg, "supervisor", stderr=True)
    if duration > 0:
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        signal.setitimer(signal.ITIMER_REAL, duration)
    click.echo(f"recording {', '.join(wanted)} to {cfg.path(out)}", err=True)
    sys.exit(asyncio.run(run_supervisor(cfg, foreground=True)))
