"""``incident bundle``: one tar.gz an operator can attach to a bug report.

Contents (``MANIFEST.json`` lists each member and what was left out and why):
- ``status.json``: the supervisor's status document (or ``{"running": false}``);
- ``logs/``: every actor's log lines inside the window (rotated files too), crash output;
- ``recordings/``: the recorded bus messages of the window, as one segment file;
- ``db_summary.json``: schema version, key/order/fill counts, latches, incidents and the
  last arming records; the database itself only with ``--with-db`` (a consistent copy);
- ``config.json``: the effective config with every secret replaced by ``<redacted>``;
- ``versions.json``: python, pyzmq, libzmq, msgspec, apsw/SQLite, aiohttp, btcbot.

No secret leaves in it. Secrets are gathered from the config (API key and secret, the
secret file, webhook URLs, which carry bot tokens) and from CURVE secret keys under
``<data_dir>/keys``; every text member has each of them replaced, and a binary member
(the recording slice, the DB copy) that contains one is dropped and named in the
manifest rather than altered (rewriting bytes inside framed records would corrupt them).
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import apsw
import msgspec

from actors.supervisor.logtail import line_time
from bus.messages import SCHEMA_VERSION
from shared.config import Config
from shared.recording import RecordingError, SegmentWriter, read_recording

REDACTED = "<redacted>"
MIN_SECRET_LEN = 6  # shorter strings would redact ordinary words
_CURVE_SECRET = re.compile(r'secret-key\s*=\s*"([^"]+)"')
SECRET_CONFIG_FIELDS = (("exchange", "api_key"), ("exchange", "api_secret"),
                        ("simulator", "api_secret"))


# --- secrets -------------------------------------------------------------------------------


def collect_secrets(cfg: Config) -> set[str]:
    """Every value that must not appear in a bundle."""
    found = {cfg.exchange.api_key, cfg.exchange.api_secret,
             os.environ.get("BTCTURK_API_KEY", ""), os.environ.get("BTCTURK_API_SECRET", "")}
    for hook in cfg.alerts.webhooks:
        found.add(hook.url)
        found.update(_url_secrets(hook.url))
        found.add(hook.chat_id)
    keys_dir = cfg.path(cfg.data_dir) / "keys"
    if keys_dir.is_dir():
        for path in keys_dir.rglob("*"):
            if not path.is_file():
                continue
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            found.update(_CURVE_SECRET.findall(text))
            if "secret" in path.name:
                found.update(line.strip() for line in text.splitlines())
    return {s for s in found if s and len(s) >= MIN_SECRET_LEN}


def _url_secrets(url: str) -> set[str]:
    """Path segments and query values of a webhook URL (a Telegram bot token is a path
    segment, many hooks carry a token in the query)."""
    rest = url.split("://", 1)[-1]
    _host, _, tail = rest.partition("/")
    parts = re.split(r"[/?&=#]", tail)
    return {p for p in parts if len(p) >= 16}


def redact(text: str, secrets: Iterable[str]) -> str:
    ordered = [s for s in sorted(secrets, key=len, reverse=True)  # a URL before its token
               if s not in REDACTED]
    # Until none is left: a replacement can join its neighbours into another secret.
    for _ in range(10):
        if not any(s in text for s in ordered):
            return text
        for s in ordered:
            text = text.replace(s, REDACTED)
    if any(s in text for s in ordered):  # pathological secrets: withhold, never leak
        return "<withheld: a secret could not be redacted from this text>\n"
    return text


def redacted_config(cfg: Config, secrets: set[str]) -> dict[str, Any]:
    doc = msgspec.to_builtins(cfg)
    for section, field in SECRET_CONFIG_FIELDS:
        if doc.get(section, {}).get(field):
            doc[section][field] = REDACTED
    for hook in doc.get("alerts", {}).get("webhooks", []) or []:
        hook["url"] = REDACTED
        if hook.get("chat_id"):
            hook["chat_id"] = REDACTED
    return json.loads(redact(json.dumps(doc), secrets))


# --- pieces ----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import aiohttp
    import zmq

    try:
        from importlib.metadata import version
        btcbot = version("btcbot")
    except Exception:  # not installed as a distribution (a bare checkout)
        btcbot = "unknown"
    return {"btcbot": btcbot, "python": sys.version.split()[0],
            "platform": platform.platform(), "pyzmq": zmq.pyzmq_version(),
            "libzmq": zmq.zmq_version(), "msgspec": msgspec.__version__,
            "apsw": apsw.apsw_version(), "sqlite": apsw.sqlite_lib_version(),
            "aiohttp": aiohttp.__version__}


def log_window(path: Path, since: float) -> str:
    """Lines stamped at or after ``since``; an unstamped line (a traceback) goes with
    the stamped line before it."""
    out: list[str] = []
    keep = False
    with open(path, errors="replace") as fh:
        for line in fh:
            t = line_time(line)
            if t is not None:
                keep = t >= since
            if keep:
                out.append(line)
    return "".join(out)


def log_files(cfg: Config, since: float) -> list[Path]:
    """Current and rotated actor logs and crash output touched inside the window."""
    if not cfg.log_path.is_dir():
        return []
    return sorted(p for p in cfg.log_path.iterdir()
                  if p.is_file() and (".log" in p.name or p.suffix == ".out")
                  and p.stat().st_mtime >= since)


def db_summary(path: Path) -> dict[str, Any]:
    """Counts and control state from the executor DB, opened read-only."""
    if not path.exists():
        return {"path": str(path), "exists": False}
    out: dict[str, Any] = {"path": str(path), "exists": True,
                           "size_bytes": path.stat().st_size}
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        return {**out, "error": str(exc)}
    try:
        conn.setbusytimeout(2000)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        out["tables"] = sorted(tables)
        if "schema_version" in tables:
            out["schema_version"] = conn.execute(
                "SELECT max(version) FROM schema_version").fetchone()[0]
        groups = {"idempotency_keys": "status", "orders": "state"}
        for table, column in groups.items():
            if table in tables:
                out[f"{table}_by_{column}"] = dict(conn.execute(
                    f"SELECT {column}, count(*) FROM {table} GROUP BY {column}").fetchall())
        for table in ("fills", "positions", "balances", "incidents", "arming_records"):
            if table in tables:
                out[f"{table}_count"] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if "latches" in tables:
            out["latches"] = [{"name": n, "value": bool(v), "reason": r, "updated_at": u}
                              for n, v, r, u in conn.execute(
                                  "SELECT name, value, reason, updated_at FROM latches")]
        if "incidents" in tables:
            out["incidents_recent"] = _rows(conn, "SELECT * FROM incidents "
                                                  "ORDER BY rowid DESC LIMIT 50")
        if "arming_records" in tables:
            out["arming_records_recent"] = _rows(conn, "SELECT id, at, mode, armed, report FROM "
                                                       "arming_records ORDER BY id DESC LIMIT 5")
    except apsw.Error as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return out


def _rows(conn: apsw.Connection, sql: str) -> list[dict[str, Any]]:
    cur = conn.execute(sql)
    rows = cur.fetchall()
    names = [d[0] for d in cur.getdescription()] if rows else []
    return [dict(zip(names, r, strict=True)) for r in rows]


def recording_slice(cfg: Config, since_ns: int, workdir: Path) -> tuple[Path | None, int, str]:
    """The window's records rewritten into one fresh segment under ``workdir``:
    (path or None, records, note)."""
    source = cfg.path(cfg.recorder.path)
    if not source.is_dir() or not any(source.iterdir()):
        return None, 0, f"no recordings in {source}"
    writer = SegmentWriter(workdir, schema_version=SCHEMA_VERSION, max_bytes=2**62,
                           max_s=10**9, meta={"bundle_since_ns": since_ns})
    n = 0
    note = ""
    try:
        for rec in read_recording(source, from_ns=since_ns):
            writer.append(rec.recv_ns, rec.topic.encode(), rec.payload)
            n += 1
    except RecordingError as exc:
        note = f"stopped at an unreadable segment: {exc}"
    writer.close()
    return writer.path, n, note


def db_copy(path: Path, dest: Path) -> None:
    """A consistent copy through SQLite's backup API (the executor may be writing)."""
    src = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    dst = apsw.Connection(str(dest))
    try:
        with dst.backup("main", src, "main") as backup:
            while not backup.done:
                backup.step(256)
    finally:
        dst.close()
        src.close()


# --- the bundle ------------------------------------------------------------------------------


class _Tar:
    def __init__(self, tar: tarfile.TarFile, root: str, secrets: set[str]) -> None:
        self.tar, self.root, self.secrets = tar, root, secrets
        self.members: list[dict[str, Any]] = []
        self.omitted: list[dict[str, str]] = []

    def text(self, name: str, text: str) -> None:
        data = redact(text, self.secrets).encode()
        info = tarfile.TarInfo(f"{self.root}/{name}")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        self.tar.addfile(info, io.BytesIO(data))
        self.members.append({"name": name, "bytes": len(data)})

    def json(self, name: str, doc: Any) -> None:
        self.text(name, json.dumps(doc, indent=2, default=str) + "\n")

    def binary(self, name: str, path: Path) -> None:
        data = path.read_bytes()
        leaked = [s for s in self.secrets if s.encode() in data]
        if leaked:
            self.omitted.append({"name": name, "why": f"contains {len(leaked)} secret value(s)"})
            return
        info = tarfile.TarInfo(f"{self.root}/{name}")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        self.tar.addfile(info, io.BytesIO(data))
        self.members.append({"name": name, "bytes": len(data)})


def build_bundle(cfg: Config, out: Path, *, since_s: float, status: dict[str, Any],
                 with_db: bool = False, step: Callable[[str], None] = lambda _: None,
                 now: float | None = None) -> dict[str, Any]:
    """Write the bundle to ``out`` (0600); returns the manifest. ``step`` is called once
    per stage (a progress bar's tick)."""
    now = time.time() if now is None else now
    since = now - since_s
    secrets = collect_secrets(cfg)
    root = out.name.removesuffix(".tar.gz")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar, \
            tempfile.TemporaryDirectory(prefix="btcbot-bundle-") as tmp:
        t = _Tar(tar, root, secrets)
        t.json("status.json", status)
        step("status")
        for path in log_files(cfg, since):
            t.text(f"logs/{path.name}", log_window(path, since) if ".log" in path.name
                   else path.read_text(errors="replace")[-200_000:])
        step("logs")
        seg, records, note = recording_slice(cfg, int(since * 1e9), Path(tmp) / "rec")
        if seg is not None:
            t.binary(f"recordings/{seg.name}", seg)
        step("recordings")
        db_path = cfg.path(cfg.executor.db_path)
        t.json("db_summary.json", db_summary(db_path))
        if with_db and db_path.exists():
            copy = Path(tmp) / "btcbot.db"
            db_copy(db_path, copy)
            t.binary("db/btcbot.db", copy)
        step("db")
        t.json("config.json", redacted_config(cfg, secrets))
        t.json("versions.json", versions())
        manifest = {"created_at": now, "since": since, "window_s": since_s,
                    "mode": cfg.mode, "recording_records": records, "recording_note": note,
                    "members": t.members, "omitted": t.omitted,
                    "secrets_redacted": len(secrets)}
        t.json("MANIFEST.json", manifest)
        step("done")
    return manifest


def parse_duration(text: str) -> float:
    """``30m``, ``2h``, ``90s``, ``1d`` or plain seconds → seconds (ValueError if not)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 30m, 2h, 90s)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
