"""``btcbot-supervisor``: the operator's single entry point (DESIGN section 5).

Exit codes: 0 ok; 1 runtime failure; 2 bad usage or config (the message names
the field); 3 already running / lock held.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import zmq.asyncio

from actors.strategy.loader import load_strategy
from actors.supervisor.backtest_cli import backtest, record_market
from actors.supervisor.cli_common import (
    EXIT_FAILURE,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    load,
    run_supervisor,
)
from actors.supervisor.core import InstanceLock, read_pid
from actors.supervisor.logtail import Follower, format_line, interleave, last_lines, log_paths
from actors.supervisor.ops_cli import arm_live, incident, preflight, why
from actors.supervisor.status import render_text
from actors.supervisor.symbols import check_symbols, judge
from actors.supervisor.watch import watch as watch_status
from bus.control import fetch_status, operator_auth, supervisor_request
from bus.messages import Ack
from bus.transport import RequestFailed
from replay.cli import replay
from replay.recordings_cli import recordings
from shared.actorspec import ACTOR_NAMES
from shared.actorspec import spec as actor_spec
from shared.config import Config, ConfigError
from shared.files import PRIVATE_UMASK, audit_private_dirs
from shared.logging import setup_logging


def send(cfg: Config, command: str, *, timeout_s: float = 5.0, **kwargs: Any) -> Any:
    """One command to the running supervisor; RequestFailed if it is not there."""

    async def go() -> Any:
        auth = operator_auth(cfg.data_path, cfg.identity("operator"))
        ctx = zmq.asyncio.Context()
        try:
            return await supervisor_request(ctx, cfg.supervisor_endpoint, command,
                                            server=cfg.identity("supervisor"), auth=auth,
                                            timeout_s=timeout_s, **kwargs)
        finally:
            ctx.destroy(linger=0)

    return asyncio.run(go())


def is_running(cfg: Config) -> bool:
    return InstanceLock(cfg).is_held()


def hoist_config(args: list[str]) -> list[str]:
    """``--config PATH`` (or ``--config=PATH``) anywhere before a ``--``, moved to the
    front where the group parses it: ``status --config x.toml`` is
    ``--config x.toml status``. The last one given wins, as for any click option."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg == "--config" and i + 1 < len(args):
            front += args[i:i + 2]
            i += 2
            continue
        if arg.startswith("--config="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class _Cli(click.Group):
    """The root group: ``--config`` is accepted before or after the subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_config(args))


def _version() -> str:
    from actors.supervisor.bundle import versions

    v = versions()
    return (f"btcbot-supervisor {v['btcbot']} (python {v['python']}, pyzmq {v['pyzmq']}, "
            f"libzmq {v['libzmq']}, msgspec {v['msgspec']}, sqlite {v['sqlite']})")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version())
        ctx.exit(0)


def complete_actor(ctx: click.Context, param: click.Parameter,
                   incomplete: str) -> list[str]:
    """Shell completion of an actor's name (click's own completion)."""
    return [n for n in ACTOR_NAMES if n.startswith(incomplete)]


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default="supervisor.toml", show_default=True,
              envvar="BTCBOT_CONFIG", show_envvar=True, type=click.Path(dir_okay=False),
              help="supervisor.toml to use (before or after the command)")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="versions of btcbot and its libraries")
@click.pass_context
def cli(ctx: click.Context, config_path: str) -> None:
    """Start, watch and control the btcbot actor pipeline.

    \b
    Shell completion (zsh: zsh_source; fish: fish_source ... | source):
      eval "$(_BTCBOT_SUPERVISOR_COMPLETE=bash_source btcbot-supervisor)"
    """
    os.umask(PRIVATE_UMASK)  # what we write (and every child we start) is owner-only
    ctx.obj = {"config": config_path}


# --- start / stop ---------------------------------------------------------------------


@cli.command()
@click.option("--detach", is_flag=True, help="run in the background; return once all are READY")
@click.option("--mode", type=click.Choice(["dry-run", "paper", "live"]), default=None)
@click.option("--only", default="", metavar="A,B",
              help="run only these actors (a split deployment: the bus and the rest run on "
                   "another host, docs/security.md)")
@click.option("--daemon-child", is_flag=True, hidden=True)
@click.pass_context
def start(ctx: click.Context, detach: bool, mode: str | None, only: str,
          daemon_child: bool) -> None:
    """Start bus, recorder and actors (and the simulator in paper mode)."""
    cfg = load(ctx, mode)
    if only:
        restrict_to(cfg, only)
    audit = audit_private_dirs(cfg.private_dirs(), cfg.shared_dirs())
    for line in audit.fixed:
        click.echo(f"btcbot-supervisor: warning: {line}", err=True)
    if audit.refused:
        fail("unsafe directory: " + "; ".join(audit.refused), EXIT_USAGE)
    if "strategy" in cfg.enabled_actors():
        try:  # the plug-in and its parameters, before anything starts (exit 2)
            load_strategy(cfg.strategy)
        except ConfigError as exc:
            fail(f"config error: {exc}", EXIT_USAGE)
    if cfg.mode == "live" and (problems := cfg.live_arming_problems()):
        fail("live trading is not armed: " + "; ".join(problems), EXIT_USAGE)
    if is_running(cfg):
        fail(f"already running (pid {read_pid(cfg.runtime_path / 'supervisor.pid')}, "
             f"runtime dir {cfg.runtime_path})", EXIT_LOCKED)
    if not daemon_child and not cfg.runs_simulator and "marketdata" in cfg.enabled_actors():
        # The exchange is already there (live; dry-run on a configured URL): ask it now,
        # before preflight (whose exit 1 would hide a config error) and before any
        # process starts. With the embedded simulator the supervisor asks once it is up.
        action, message = judge(cfg.mode, asyncio.run(check_symbols(cfg)))
        if action == "warn":
            click.echo(f"btcbot-supervisor: warning: {message}", err=True)
        elif action != "start":
            fail(message, EXIT_USAGE if action == "refuse_usage" else EXIT_FAILURE)
    if cfg.mode == "live" and not daemon_child:
        arm_live(cfg)  # preflight; exits 1 on a FAIL, the report stored in the DB
    if detach:
        sys.exit(start_detached(cfg, ctx.obj["config"], only))
    setup_logging(cfg, "supervisor", stderr=not daemon_child)
    sys.exit(asyncio.run(run_supervisor(cfg, foreground=not daemon_child)))


def restrict_to(cfg: Config, only: str) -> None:
    """``--only a,b``: every other actor disabled for this run (the config file is not
    changed). Unknown names exit 2."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ACTOR_NAMES]
    if unknown or not names:
        fail(f"--only: unknown actor {', '.join(unknown)} (known: {', '.join(ACTOR_NAMES)})"
             if unknown else "--only: name at least one actor", EXIT_USAGE)
    for name in ACTOR_NAMES:
        cfg.actor_settings(name).enabled = name in names


def start_detached(cfg: Config, config_path: str, only: str = "") -> int:
    cfg.log_path.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "actors.supervisor", "--config", config_path, "start",
            "--mode", cfg.mode, "--daemon-child", *(["--only", only] if only else [])]
    out_path = cfg.log_path / "supervisor.out"
    with open(out_path, "ab") as out:
        said_from = out.tell()  # what the daemon says from here on is this start's
        daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                  start_new_session=True)
    timeout = sum(cfg.actor_settings(n).start_timeout_s for n in cfg.enabled_actors()) + 10
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if (rc := daemon.poll()) is not None:
            said = _daemon_said(out_path, said_from)
            fail(f"supervisor exited with code {rc} during start; see {cfg.log_path}"
                 + "".join(f"\n  {line}" for line in said), rc or 1)
        doc = _try_status(cfg)
        if doc is not None and all(a["ready"] for a in doc["actors"]):
            click.echo(f"started (supervisor pid {daemon.pid}); all actors READY")
            return EXIT_OK
        if doc is not None and (gave_up := [a["name"] for a in doc["actors"] if a["gave_up"]]):
            latched = [n for n in gave_up if actor_spec(n).critical(cfg)]
            effect = "kill switch set" if latched else "an observer: trading not stopped"
            click.echo(f"btcbot-supervisor: started (pid {daemon.pid}) but gave up on "
                       f"{', '.join(gave_up)} (restart intensity limit; {effect}); "
                       f"see {cfg.log_path}", err=True)
            return EXIT_FAILURE
        time.sleep(0.1)
    not_ready = [a["name"] for a in (doc or {}).get("actors", []) if not a["ready"]]
    click.echo(f"btcbot-supervisor: started (pid {daemon.pid}) but not READY after "
               f"{timeout:.0f}s: {', '.join(not_ready) or 'supervisor not answering'}", err=True)
    return EXIT_FAILURE


def _daemon_said(path: Path, offset: int, limit: int = 20) -> list[str]:
    """The last lines the daemon wrote to supervisor.out since ``offset``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-limit:]


def _try_status(cfg: Config, timeout_s: float = 1.0) -> dict[str, Any] | None:
    async def go() -> dict[str, Any] | None:
        try:
            auth = operator_auth(cfg.data_path, cfg.identity("operator"))
        except RequestFailed:
            return None  # no keys yet: no supervisor ever started here
        ctx = zmq.asyncio.Context()
        try:
            return await fetch_status(ctx, cfg.supervisor_endpoint, auth=auth,
                                      server=cfg.identity("supervisor"),
                                      timeout_s=timeout_s)
        finally:
            ctx.destroy(linger=0)

    return asyncio.run(go())


@cli.command()
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="seconds before SIGKILL (default: supervisor.stop_timeout_s)")
@click.pass_context
def stop(ctx: click.Context, timeout_s: float | None) -> None:
    """SIGTERM everything, SIGKILL after the timeout; leaves no process behind."""
    cfg = load(ctx)
    timeout_s = cfg.supervisor.stop_timeout_s if timeout_s is None else timeout_s
    pid = read_pid(cfg.runtime_path / "supervisor.pid")
    if not is_running(cfg):
        click.echo("not running")
        return
    try:
        send(cfg, "stop", timeout_s=2.0)
    except RequestFailed:
        if pid:
            _signal(pid, signal.SIGTERM)
    if not _wait_unlocked(cfg, timeout_s + 5):
        if pid:
            click.echo(f"supervisor {pid} did not stop: SIGKILL (children die with it)")
            _signal(pid, signal.SIGKILL)
        if not _wait_unlocked(cfg, 5):
            fail("supervisor still holds its lock")
    if pid and not _wait_gone(pid, 5.0):
        fail(f"supervisor {pid} released its lock but is still alive")
    click.echo("stopped")


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _is_zombie(pid):
            return True
        time.sleep(0.02)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_unlocked(cfg: Config, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(cfg):
            return True
        time.sleep(0.05)
    return False


# --- status / restart / logs -------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.option("--watch", "watching", is_flag=True,
              help="redraw every --interval seconds, like top (Ctrl-C quits)")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.1), default=1.0,
              show_default=True, help="seconds between redraws with --watch")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watching: bool, interval_s: float) -> None:
    """Actors, states, gates, latches, keys, positions, PnL and bus health. Exit 1 when
    not running (with --watch: keeps watching, exit 0 on Ctrl-C)."""
    cfg = load(ctx)
    if watching:
        def fetch() -> dict[str, Any] | None:
            return _try_status(cfg, timeout_s=5.0) if is_running(cfg) else None

        def render(doc: dict[str, Any]) -> str:
            return json.dumps(doc, indent=2) if as_json else render_text(doc)

        sys.exit(watch_status(fetch, render, sys.stdout, interval_s=interval_s,
                              tty=sys.stdout.isatty()))
    # A busy supervisor is not a stopped one: wait longer than start's polling does.
    doc = _try_status(cfg, timeout_s=5.0) if is_running(cfg) else None
    if doc is None:
        if as_json:
            click.echo(json.dumps({"running": False, "mode": cfg.mode, "actors": []}))
        else:
            click.echo("not running")
        sys.exit(EXIT_FAILURE)
    click.echo(json.dumps(doc, indent=2) if as_json else render_text(doc))


def _command(ctx: click.Context, command: str, **kwargs: Any) -> None:
    cfg = load(ctx)
    if not is_running(cfg):
        fail("not running")
    try:
        reply = send(cfg, command, timeout_s=30.0, **kwargs)
    except RequestFailed as exc:
        fail(str(exc))
    click.echo(reply.detail if isinstance(reply, Ack) else "ok")


@cli.command()
@click.argument("actor", shell_complete=complete_actor)
@click.pass_context
def restart(ctx: click.Context, actor: str) -> None:
    """Restart one actor; the others keep running."""
    _command(ctx, "restart", actor=actor)


@cli.command("kill-switch")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--reason", default="operator")
@click.pass_context
def kill_switch(ctx: click.Context, state: str, reason: str) -> None:
    """Stop (on) or allow (off) new orders; persisted by the executor."""
    _command(ctx, "kill_switch", value=state == "on", reason=reason)


@cli.command()
@click.option("--reason", default="operator")
@click.pass_context
def pause(ctx: click.Context, reason: str) -> None:
    """Pause trading (persisted)."""
    _command(ctx, "pause", reason=reason)


@cli.command()
@click.option("--reason", default="operator")
@click.pass_context
def resume(ctx: click.Context, reason: str) -> None:
    """Resume trading after pause."""
    _command(ctx, "resume", reason=reason)


@cli.group()
def latch() -> None:
    """The safety latch set by the reconciler after repeated reconcile failures."""


@latch.command("clear")
@click.option("--reason", default="operator")
@click.pass_context
def latch_clear(ctx: click.Context, reason: str) -> None:
    """Clear the safety latch (only an operator can)."""
    _command(ctx, "latch_clear", reason=reason)


@cli.command()
@click.option("--open", "open_browser", is_flag=True, help="open it in a browser too")
@click.pass_context
def dashboard(ctx: click.Context, open_browser: bool) -> None:
    """Print the web dashboard's URL with its access token."""
    cfg = load(ctx)
    if not cfg.actor_enabled("dashboard"):
        fail("the dashboard is not enabled: set [actors.dashboard] enabled = true", EXIT_USAGE)
    token_path = cfg.data_path / cfg.dashboard.token_file
    try:
        token = token_path.read_text().strip()
    except OSError:
        fail(f"no dashboard token yet ({token_path}): start the pipeline first")
    d = cfg.dashboard
    host = f"[{d.host}]" if ":" in d.host else d.host
    url = f"http://{host}:{d.port}/?token={token}"
    click.echo(url)
    if not is_running(cfg):
        click.echo("(the pipeline is not running)", err=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)


def complete_log(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [n for n in ("supervisor", *ACTOR_NAMES) if n.startswith(incomplete)]


@cli.command()
@click.argument("actor", required=False, shell_complete=complete_log)
@click.option("--all", "all_", is_flag=True,
              help="every actor, the simulator and the supervisor, interleaved by time")
@click.option("-f", "--follow", is_flag=True)
@click.option("-n", "lines", type=int, default=20, show_default=True,
              help="lines to show first (with --all: of all logs together)")
@click.pass_context
def logs(ctx: click.Context, actor: str | None, all_: bool, follow: bool, lines: int) -> None:
    """Show (and follow) one actor's log, or all of them (coloured by actor on a
    terminal, plain when piped). `logs strategy -f` shows each decision as risk
    answers it."""
    cfg = load(ctx)
    known = log_paths(cfg)
    if all_:
        paths = {n: p for n, p in known.items() if p.exists() or follow}
        if not paths:
            fail(f"no logs in {cfg.log_path}", EXIT_USAGE)
    elif actor:
        if actor not in known:
            fail(f"no log named {actor!r} (known: {', '.join(known)})", EXIT_USAGE)
        paths = {actor: known[actor]}
        if not paths[actor].exists():
            fail(f"no log for {actor!r} in {cfg.log_path}", EXIT_USAGE)
    else:
        fail("name an actor or use --all", EXIT_USAGE)
    names = list(paths)
    width = max(len(n) for n in names)
    colour = {n: i for i, n in enumerate(known)}  # an actor keeps its colour

    def show(name: str, line: str) -> None:
        click.echo(format_line(name, line, width, colour[name]) if all_ else line)

    times: dict[str, float] = {}
    first = interleave({n: last_lines(p, lines) for n, p in paths.items()}, times)
    for name, line in first[-lines:] if lines > 0 else []:
        show(name, line)
    if not follow:
        return
    followers = {n: Follower(p) for n, p in paths.items()}
    try:
        while True:
            # a line without a time (the simulator's) sorts as read, about now
            batch = interleave({n: f.poll() for n, f in followers.items()}, times,
                               arrived=time.time() - 0.1)
            for name, line in batch:
                show(name, line)
            if not batch:
                time.sleep(0.1)
    except KeyboardInterrupt:
        pass


def main() -> None:
    cli(prog_name="btcbot-supervisor")


# Recorder inspection and replay (replay/cli.py); operator tools (ops_cli.py).
cli.add_command(recordings)
cli.add_command(replay)
cli.add_command(preflight)
cli.add_command(incident)
cli.add_command(why)

# The paper account (actors/supervisor/paper_cli.py): paper reset.
from actors.supervisor.paper_cli import paper  # noqa: E402

cli.add_command(paper)

# Settling orders the executor could not (actors/supervisor/orders_cli.py): orders resolve.
from actors.supervisor.orders_cli import orders  # noqa: E402

cli.add_command(orders)

# Strategy research (actors/supervisor/backtest_cli.py): backtest, record-market.

cli.add_command(backtest)
cli.add_command(record_market)

# The deterministic simulation (actors/supervisor/simulate_cli.py, simulate/).
from actors.supervisor.simulate_cli import simulate  # noqa: E402

cli.add_command(simulate)

# The bus's roles table and CURVE keys (actors/supervisor/security_cli.py).
from actors.supervisor.security_cli import keys, roles_cmd  # noqa: E402

cli.add_command(roles_cmd)
cli.add_command(keys)
