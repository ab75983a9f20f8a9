"""``btcbot-supervisor recordings list|show|du|prune|compress``.

Every command takes an optional PATH (a directory of segments; default: the
recorder's directory from the config). The maintenance commands follow the recorder's
own rules (shared/recording/maintenance.py) and its locks: the segment being written
is never compressed or removed, so they are safe while the bot runs.

Exit codes: 0 ok; 1 failure (an unreadable segment, a failed compression); 2 bad usage
(the message names the option and the problem).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from bus.messages import packet_decoder
from shared.config import Config, ConfigError, load_config
from shared.recording import (
    ReadReport,
    Record,
    RecordingError,
    iso_ns,
    parse_time,
    read_recording,
    segment_paths,
)
from shared.recording.compress import DEFAULT_LEVEL
from shared.recording.directory import spans
from shared.recording.format import ZSUFFIX
from shared.recording.index import SegmentIndex
from shared.recording.maintenance import compress_closed, prune, usage
from shared.recording.reader import scan_segment, top_level
from shared.sizes import fmt_size, parse_size

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"btcbot-supervisor: {message}", err=True)
    sys.exit(code)


def load_cfg(ctx: click.Context, required: bool) -> Config | None:
    path = (ctx.obj or {}).get("config", "supervisor.toml")
    if not required and not Path(path).exists():
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(f"config error: {exc}", EXIT_USAGE)


def time_option(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def topic_list(values: Iterable[str]) -> tuple[str, ...]:
    """--topics md.book --topics portfolio, or --topics md.book,portfolio."""
    return tuple(t.strip() for v in values for t in v.split(",") if t.strip())


def _target(ctx: click.Context, path: str | None) -> Path:
    if path is not None:
        return Path(path)
    cfg = load_cfg(ctx, required=True)
    assert cfg is not None
    return cfg.path(cfg.recorder.path)


def _directory(ctx: click.Context, path: str | None) -> Path:
    target = _target(ctx, path)
    if not target.is_dir():
        fail(f"{target}: not a recordings directory", EXIT_USAGE)
    return target


class _Size(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = _Size()


@click.group()
def recordings() -> None:
    """Inspect and maintain recordings."""


# --- list ------------------------------------------------------------------------------


@recordings.command("list")
@click.argument("path", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.pass_context
def list_cmd(ctx: click.Context, path: str | None, as_json: bool) -> None:
    """Segments under PATH: time span, records, size on disk, compressed or not.

    Read from each segment's index (rebuilt by scanning where missing); a segment
    being written is scanned as it is now."""
    target = _target(ctx, path)
    try:
        paths = segment_paths(target)
    except FileNotFoundError as exc:
        fail(str(exc), EXIT_USAGE)
    rows = [_row(s.path, s.index) for s in spans(paths)]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        if not rows:
            click.echo(f"no recordings in {target}")
        for r in rows:
            click.echo(_describe(r))
    if any(r["error"] for r in rows):
        sys.exit(EXIT_FAILURE)


def _row(path: Path, idx: SegmentIndex | None) -> dict[str, Any]:
    compressed = path.name.endswith(ZSUFFIX)
    disk = path.stat().st_size if path.exists() else 0
    if idx is None:  # open (being written) or unreadable: scan it as it is now
        info = scan_segment(path)
        first, last = info.first_ns, info.end_ns
        return dict(
            path=str(path), start_ns=info.start_ns, first_ns=first, end_ns=last,
            start=iso_ns(info.start_ns) if info.start_ns else "",
            end=iso_ns(last) if last else "", records=info.records, size=info.size,
            disk_bytes=disk, compressed=compressed, open=not info.error,
            topics=info.topics, torn_tail=info.torn_tail, bytes_skipped=info.bytes_skipped,
            tail_reason=info.tail_reason, schema_version=info.schema_version,
            format_version=info.format_version, error=info.error,
        )
    end = idx.last_ns if idx.records else idx.start_ns
    return dict(
        path=str(path), start_ns=idx.start_ns, first_ns=idx.first_ns, end_ns=end,
        start=iso_ns(idx.start_ns), end=iso_ns(end), records=idx.records,
        size=idx.content_bytes, disk_bytes=disk, compressed=compressed, open=False,
        topics=top_level(idx.topics), torn_tail=idx.torn_tail,
        bytes_skipped=idx.bytes_skipped, tail_reason=idx.tail_reason,
        schema_version=idx.schema_version, format_version=1, error="",
    )


def _describe(r: dict[str, Any]) -> str:
    if r["error"]:
        return f"{r['path']}  UNREADABLE: {r['error']}"
    topics = " ".join(f"{k}={v}" for k, v in r["topics"].items())
    tail = (f"  TORN TAIL: {r['bytes_skipped']} bytes skipped ({r['tail_reason']})"
            if r["torn_tail"] else "")
    span = (r["end_ns"] - r["start_ns"]) / 1e9
    form = "zstd" if r["compressed"] else ("open" if r["open"] else "plain")
    return (f"{r['path']}  {r['start']} .. {r['end']} ({span:.1f}s)  {r['records']} records  "
            f"{r['disk_bytes']} bytes on disk ({form}; {r['size']} bytes raw)  "
            f"schema {r['schema_version']}  {topics}{tail}")


# --- show ------------------------------------------------------------------------------


@recordings.command("show")
@click.argument("file", type=click.Path())
@click.option("--topics", "topics", multiple=True, metavar="PREFIX",
              help="topic prefix to keep (repeatable or comma-separated)")
@click.option("--from", "from_", metavar="T", help="ISO-8601 or epoch seconds")
@click.option("--to", "to", metavar="T", help="ISO-8601 or epoch seconds")
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
def show(file: str, topics: tuple[str, ...], from_: str | None, to: str | None,
         as_json: bool) -> None:
    """Print the records of FILE (a segment, compressed or not, or a directory of
    segments), one a line."""
    from_ns, to_ns = time_option(from_, "--from"), time_option(to, "--to")
    reports: dict[str, ReadReport] = {}
    try:
        for rec in read_recording(file, topic_list(topics) or None, from_ns, to_ns, reports):
            click.echo(render_record(rec, as_json))
    except FileNotFoundError as exc:
        fail(str(exc), EXIT_USAGE)
    except RecordingError as exc:
        fail(f"{file}: {exc}")
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


# --- du --------------------------------------------------------------------------------


@recordings.command("du")
@click.argument("path", required=False, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print a JSON document")
@click.pass_context
def du_cmd(ctx: click.Context, path: str | None, as_json: bool) -> None:
    """Totals, free space, and bytes per hour over the last day."""
    directory = _directory(ctx, path)
    now = time.time_ns()
    u = usage(directory, now)
    hours = [{"hour_start": iso_ns(now - (24 - h) * 3_600_000_000_000)[:19] + "Z",
              "bytes": b} for h, b in enumerate(u.hourly)]
    doc = {
        "directory": str(directory), "segments": u.segments,
        "compressed_segments": u.compressed_segments, "records": u.records,
        "disk_bytes": u.disk_bytes, "free_bytes": u.free_bytes,
        "oldest_record": iso_ns(u.oldest_ns) if u.oldest_ns else "",
        "newest_record": iso_ns(u.newest_ns) if u.newest_ns else "",
        "bytes_per_hour_last_day": round(u.bytes_per_hour_last_day),
        "last_day": hours,
    }
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    click.echo(f"{directory}: {u.segments} segments ({u.compressed_segments} compressed), "
               f"{u.records} records, {fmt_size(u.disk_bytes)} on disk, "
               f"{fmt_size(u.free_bytes)} free")
    click.echo(f"records from {doc['oldest_record'] or '-'} to {doc['newest_record'] or '-'}")
    click.echo(f"last day: {fmt_size(int(u.bytes_per_hour_last_day))}/h on average over the "
               f"hours recorded")
    for h in hours:
        if h["bytes"]:
            click.echo(f"  {h['hour_start']}  {fmt_size(h['bytes']):>8}")


# --- prune -----------------------------------------------------------------------------


@recordings.command("prune")
@click.argument("path", required=False, type=click.Path())
@click.option("--keep-days", type=click.FloatRange(min=0), default=None, metavar="N",
              help="remove segments whose newest record is older than N days "
                   "(default: recorder.retain_days; 0: no age limit)")
@click.option("--keep-bytes", type=SIZE, default=None,
              help="then remove the oldest until the total is at most SIZE, e.g. 500M, 20G "
                   "(default: recorder.retain_bytes; 0: no size limit)")
@click.option("--dry-run", is_flag=True, help="only say what would be removed")
@click.pass_context
def prune_cmd(ctx: click.Context, path: str | None, keep_days: float | None,
              keep_bytes: int | None, dry_run: bool) -> None:
    """Remove the oldest closed segments by age and size (never the open one)."""
    if keep_days is None or keep_bytes is None:
        cfg = load_cfg(ctx, required=False)
        rc = cfg.recorder if cfg is not None else None
        if keep_days is None:
            keep_days = rc.retain_days if rc is not None else 30.0
        if keep_bytes is None:
            keep_bytes = rc.retain_bytes_value() if rc is not None else parse_size("20G")
    directory = _directory(ctx, path)
    removed = prune(directory, time.time_ns(), keep_days, keep_bytes, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        s = r.segment
        click.echo(f"{verb} {s.path.name}  {s.disk_bytes} bytes  ({r.reason})")  # type: ignore[attr-defined]
    total = sum(r.segment.disk_bytes for r in removed)
    click.echo(f"{verb} {len(removed)} segments, {fmt_size(total)}")


# --- compress --------------------------------------------------------------------------


@recordings.command("compress")
@click.argument("path", required=False, type=click.Path())
@click.option("--level", type=click.IntRange(1, 22), default=None,
              help=f"zstd level (default: recorder.compress_level, else {DEFAULT_LEVEL})")
@click.pass_context
def compress_cmd(ctx: click.Context, path: str | None, level: int | None) -> None:
    """Compress every closed uncompressed segment (e.g. recorded before compression
    existed); the segment being written is left alone."""
    if level is None:
        cfg = load_cfg(ctx, required=False)
        level = cfg.recorder.compress_level if cfg is not None else DEFAULT_LEVEL
    directory = _directory(ctx, path)
    try:
        done = compress_closed(directory, level)
    except OSError as exc:
        fail(f"compression stopped: {exc} (the segment it was working on is intact)")
    before = sum(c.before for c in done)
    after = sum(c.after for c in done)
    for c in done:
        click.echo(f"compressed {c.path.name}  {c.before} -> {c.after} bytes")
    ratio = f" ({before / after:.1f}x)" if after else ""
    click.echo(f"compressed {len(done)} segments, {fmt_size(before)} -> {fmt_size(after)}{ratio}")
