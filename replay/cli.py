"""``btcbot-supervisor replay``.

Registered by the supervisor's CLI (actors/supervisor/cli.py) with ``add_command``.
Exit codes: 0 ok; 1 failure (or, with --verify, any difference); 2 bad usage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from replay.errors import ReplayError
from replay.recordings_cli import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    load_cfg,
    time_option,
    topic_list,
)
from replay.run import ReplayOptions, run_replay
from shared.recording import RecordingError

# --- replay ----------------------------------------------------------------------------


@click.command()
@click.argument("file", type=click.Path())
@click.option("--speed", type=float, default=None, help="pace ×X of the recording (default 1)")
@click.option("--max", "max_", is_flag=True, help="as fast as possible")
@click.option("--topics", "topics", multiple=True, metavar="PREFIX",
              help="topic prefixes to feed (default md.; with --verify md., portfolio, "
                   "order., fill.)")
@click.option("--from", "from_", metavar="T", help="ISO-8601 or epoch seconds")
@click.option("--to", "to", metavar="T", help="ISO-8601 or epoch seconds")
@click.option("--verify", is_flag=True,
              help="compare the pipeline's decisions with the recorded ones")
@click.option("--record", is_flag=True, help="run a recorder in the replay pipeline too")
@click.option("--keep", is_flag=True, help="keep the replay's temp dir (logs, DB)")
@click.option("--settle", "settle_s", type=float, default=2.0, show_default=True,
              help="--verify: seconds without a new decision that end the wait")
@click.pass_context
def replay(ctx: click.Context, file: str, speed: float | None, max_: bool,
           topics: tuple[str, ...], from_: str | None, to: str | None, verify: bool,
           record: bool, keep: bool, settle_s: float) -> None:
    """Replay FILE (a segment or a directory of segments) into an isolated pipeline."""
    if speed is not None and max_:
        raise click.UsageError("--speed and --max exclude each other")
    if speed is not None and speed <= 0:
        raise click.BadParameter("must be positive", param_hint="--speed")
    if not Path(file).exists():
        fail(f"no such recording: {file}", EXIT_USAGE)
    base = load_cfg(ctx, required=False)
    opts = ReplayOptions(
        target=file, speed=None if max_ else (speed or 1.0), topics=topic_list(topics),
        from_ns=time_option(from_, "--from"), to_ns=time_option(to, "--to"), verify=verify,
        record=record, keep=keep, settle_s=settle_s,
    )
    try:
        out = run_replay(opts, base)
    except (ReplayError, RecordingError) as exc:
        fail(str(exc))
    for path, rep in out.torn.items():
        click.echo(f"note: {path}: torn tail, {rep.bytes_skipped} bytes skipped", err=True)
    f = out.feed
    click.echo(f"replayed {f.published} records ({out.primers} primers, {f.skipped} skipped) "
               f"in {f.elapsed_s:.2f}s ({f.rate:,.0f}/s)")
    if out.verify is None:
        return
    v = out.verify
    for note in v.notes:
        click.echo(f"note: config differs from the recording: {note}")
    for diff in v.differences:
        click.echo(diff)
    click.echo(f"verify: {v.intents_expected} recorded intents, {v.intents_replayed} "
               f"replayed, {v.intents_matched} identical; {v.expected} recorded decisions, "
               f"{v.replayed} replayed, {v.matched} identical; {len(v.differences)} "
               f"differences -> {'OK' if v.ok else 'FAILED'}")
    sys.exit(EXIT_OK if v.ok else EXIT_FAILURE)
