"""The operator-tool commands (preflight, why, incident bundle), registered on the main
CLI group by ``actors/supervisor/cli.py``. Each command is a thin front over its own
module; this file only parses options and prints."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import zmq.asyncio

from actors.supervisor.bundle import build_bundle, parse_duration
from actors.supervisor.core import InstanceLock
from actors.supervisor.preflight import Report, render_text
from actors.supervisor.preflight_probe import record_arming, run_preflight
from actors.supervisor.why import explain
from actors.supervisor.why import render_text as render_why
from actors.supervisor.why_sources import gather
from bus.control import fetch_status, operator_auth
from bus.transport import RequestFailed
from shared.config import Config, ConfigError, load_config
from shared.progress import progress, progress_wanted

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


def status_doc(cfg: Config) -> dict[str, Any]:
    """The running supervisor's status document, or why there is none."""
    if not InstanceLock(cfg).is_held():
        return {"running": False, "mode": cfg.mode}

    async def go() -> dict[str, Any] | None:
        try:
            auth = operator_auth(cfg.data_path, cfg.identity("operator"))
        except RequestFailed:
            return None
        ctx = zmq.asyncio.Context()
        try:
            return await fetch_status(ctx, cfg.supervisor_endpoint, auth=auth,
                                      server=cfg.identity("supervisor"),
                                      timeout_s=5.0)
        finally:
            ctx.destroy(linger=0)

    doc = asyncio.run(go())
    return doc if doc is not None else {"running": True,
                                        "error": "supervisor did not answer a status request"}


@click.group()
def incident() -> None:
    """What to send when something went wrong."""


@incident.command("bundle")
@click.option("--since", "since", default="30m", show_default=True,
              help="window: 30m, 2h, 90s, 1d or seconds")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="output file (default: ./btcbot-incident-<UTC time>.tar.gz)")
@click.option("--with-db", is_flag=True, help="also a consistent copy of the whole DB")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
@click.pass_context
def incident_bundle(ctx: click.Context, since: str, out: str | None, with_db: bool,
                    as_json: bool) -> None:
    """A tar.gz for a bug report: status, logs and recordings of the window, a DB
    summary, the config with secrets redacted, versions. No secret is in it."""
    cfg = _load(ctx)
    try:
        since_s = parse_duration(since)
    except ValueError as exc:
        click.echo(f"btcbot-supervisor: --since: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = Path(out) if out else Path.cwd() / f"btcbot-incident-{stamp}.tar.gz"
    with progress(6, "incident bundle", enabled=progress_wanted(as_json)) as bar:
        bar.update(1)
        manifest = build_bundle(cfg, path, since_s=since_s, status=status_doc(cfg),
                                with_db=with_db, step=lambda _stage: bar.update(1))
    if as_json:
        click.echo(json.dumps({"path": str(path), **manifest}))
        return
    click.echo(f"wrote {path} ({path.stat().st_size} bytes): {len(manifest['members'])} files, "
               f"{manifest['recording_records']} recorded messages, "
               f"{manifest['secrets_redacted']} secret value(s) redacted")
    for item in manifest["omitted"]:
        click.echo(f"  left out {item['name']}: {item['why']}")


@click.command()
@click.argument("order_or_intent_id")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.pass_context
def why(ctx: click.Context, order_or_intent_id: str, as_json: bool) -> None:
    """Why this order (client or exchange order id) or intent was placed, resized,
    rejected or never sent: book, strategy reason, risk's codes and limits, key history,
    send and ack, fills, PnL. Exit 1 when nothing is known about it."""
    cfg = _load(ctx)
    with progress(4, "why", enabled=progress_wanted(as_json)) as bar:
        facts = gather(cfg, order_or_intent_id, step=lambda: bar.update(1))
        bar.update(1)
    doc = explain(facts)
    click.echo(json.dumps(doc, indent=2) if as_json else render_why(doc))
    sys.exit(EXIT_OK if doc["found"] else EXIT_FAILURE)
