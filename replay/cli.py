"""``btcbot-supervisor recordings list|show`` and ``btcbot-supervisor replay``.

Registered by the supervisor's CLI (actors/supervisor/cli.py) with ``add_command``.
Exit codes: 0 ok; 1 failure (or, with --verify, any difference); 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from bus.messages import packet_decoder
from replay.errors import ReplayError
from replay.run import ReplayOptions, run_replay
from shared.config import Config, ConfigError, load_config
from shared.recording import (
    ReadReport,
    Record,
    RecordingError,
    iso_ns,
    parse_time,
    read_recording,
    scan_segment,
    segment_paths,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"btcbot-supervisor: {message}", err=True)
    sys.exit(code)


def _config(ctx: click.Context, required: bool) -> Config | None:
    path = (ctx.obj or {}).get("config", "supervisor.toml")
    if not required and not Path(path).exists():
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(f"config error: {exc}", EXIT_USAGE)


def _time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _topics(values: Iterable[str]) -> tuple[str, ...]:
    """--topics md.book --topics portfolio, or --topics md.book,portfolio."""
    return tuple(t.strip() for v in values for t in v.split(",") if t.strip())


def _target(ctx: click.Context, file: str | None) -> Path:
    if file is not None:
        return Path(file)
    cfg = _config(ctx, required=True)
    assert cfg is not None
    return cfg.path(cfg.recorder.path)


# --- recordings ------------------------------------------------------------------------


@click.group()
def recordings() -> None:
    """Inspect recording files."""


@recordings.command("list")
@click.argument("path", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.pass_context
def list_cmd(ctx: click.Context, path: str | None, as_json: bool) -> None:
    """Segments under PATH (default: the recorder's directory from the config)."""
    target = _target(ctx, path)
    try:
        paths = segment_paths(target)
    except FileNotFoundError as exc:
        _fail(str(exc), EXIT_USAGE)
    infos = [scan_segment(p) for p in paths]
    if as_json:
        click.echo(json.dumps([_info_fields(i) for i in infos], indent=1))
    else:
        if not infos:
            click.echo(f"no recordings in {target}")
        for i in infos:
            click.echo(_describe(i))
    if any(i.error for i in infos):
        sys.exit(EXIT_FAILURE)


def _info_fields(i: Any) -> dict[str, Any]:
    return dict(
        path=i.path, start_ns=i.start_ns, end_ns=i.end_ns,
        start=iso_ns(i.start_ns) if i.start_ns else "", end=iso_ns(i.end_ns) if i.end_ns else "",
        records=i.records, size=i.size, topics=i.topics, torn_tail=i.torn_tail,
        bytes_skipped=i.bytes_skipped, tail_reason=i.tail_reason,
        schema_version=i.schema_version, format_version=i.format_version, error=i.error,
    )


def _describe(i: Any) -> str:
    if i.error:
        return f"{i.path}  UNREADABLE: {i.error}"
    topics = " ".join(f"{k}={v}" for k, v in i.topics.items())
    tail = f"  TORN TAIL: {i.bytes_skipped} bytes skipped ({i.tail_reason})" if i.torn_tail else ""
    span = (i.end_ns - i.start_ns) / 1e9
    return (f"{i.path}  {iso_ns(i.start_ns)} .. {iso_ns(i.end_ns)} ({span:.1f}s)  "
            f"{i.records} records  {i.size} bytes  schema {i.schema_version}  {topics}{tail}")


@recordings.command("show")
@click.argument("file", type=click.Path())
@click.option("--topics", "topics", multiple=True, metavar="PREFIX",
              help="topic prefix to keep (repeatable or comma-separated)")
@click.option("--from", "from_", metavar="T", help="ISO-8601 or epoch seconds")
@click.option("--to", "to", metavar="T", help="ISO-8601 or epoch seconds")
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
def show(file: str, topics: tuple[str, ...], from_: str | None, to: str | None,
         as_json: bool) -> None:
    """Print the records of FILE (a segment or a directory of segments), one a line."""
    from_ns, to_ns = _time(from_, "--from"), _time(to, "--to")
    reports: dict[str, ReadReport] = {}
    try:
        for rec in read_recording(file, _topics(topics) or None, from_ns, to_ns, reports):
            click.echo(render_record(rec, as_json))
    except FileNotFoundError as exc:
        _fail(str(exc), EXIT_USAGE)
    except RecordingError as exc:
        _fail(f"{file}: {exc}")
    except BrokenPipeError:  # `| head`: the reader left, so do we, quietly
        sys.stderr.close()
        sys.exit(EXIT_OK)
    for path, rep in reports.items():
        if rep.torn_tail:
            click.echo(f"# {path}: torn tail, {rep.bytes_skipped} bytes skipped "
                       f"({rep.tail_reason})", err=True)


def record_doc(rec: Record) -> dict[str, Any]:
    doc: dict[str, Any] = {"recv_ns": rec.recv_ns, "time": iso_ns(rec.recv_ns),
                           "topic": rec.topic}
    try:
        packet = packet_decoder.decode(rec.payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        doc["malformed"] = str(exc)
        doc["payload_hex"] = rec.payload.hex()
        return doc
    doc["env"] = msgspec.structs.asdict(packet.env)
    doc["body"] = msgspec.to_builtins(packet.body)  # Decimals become strings
    return doc


def render_record(rec: Record, as_json: bool) -> str:
    doc = record_doc(rec)
    if as_json:
        return json.dumps(doc, separators=(",", ":"))
    if "malformed" in doc:
        return f"{doc['time']} {rec.topic} MALFORMED {doc['malformed']}"
    env = doc["env"]
    body = json.dumps(doc["body"], separators=(",", ":"))
    return f"{doc['time']} {rec.topic} {env['source']}#{env['seq']} {body}"


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
        _fail(f"no such recording: {file}", EXIT_USAGE)
    base = _config(ctx, required=False)
    opts = ReplayOptions(
        target=file, speed=None if max_ else (speed or 1.0), topics=_topics(topics),
        from_ns=_time(from_, "--from"), to_ns=_time(to, "--to"), verify=verify,
        record=record, keep=keep, settle_s=settle_s,
    )
    try:
        out = run_replay(opts, base)
    except (ReplayError, RecordingError) as exc:
        _fail(str(exc))
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
    click.echo(f"verify: {v.expected} recorded decisions, {v.replayed} replayed, "
               f"{v.matched} identical, {len(v.differences)} differences -> "
               f"{'OK' if v.ok else 'FAILED'}")
    sys.exit(EXIT_OK if v.ok else EXIT_FAILURE)
