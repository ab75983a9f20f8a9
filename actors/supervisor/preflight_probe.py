"""Preflight's I/O: gather the facts (exchange, executor DB, disks) and hand them to the
pure verdicts in ``actors/supervisor/preflight.py``.

The executor owns the database, so preflight opens it read-only; the one write, the
arming record of ``start --mode live``, goes through ``ExecutorDB.record_arming`` under
the executor's own lock (no executor runs while ``start`` arms).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from decimal import Decimal
from pathlib import Path

import apsw

from actors.executor.db import ExecutorDB, acquire_lock
from actors.strategy.loader import load_strategy
from actors.supervisor.preflight import (
    TRADE_PROBE_ORDER_ID,
    Check,
    DbFacts,
    ForeignOrder,
    Report,
    SymbolRule,
    judge_api_key,
    judge_balances,
    judge_clock_skew,
    judge_db,
    judge_disk,
    judge_exchange_rules,
    judge_foreign_orders,
    judge_latches,
    judge_recorder,
    judge_trade_permission,
    make_report,
)
from shared.btcturk.client import BtcTurkClient
from shared.btcturk.errors import BtcTurkError
from shared.config import Config, ConfigError

UNRESOLVED = ("PENDING", "UNKNOWN")


def _err(exc: BaseException) -> str:
    if isinstance(exc, BtcTurkError):
        status = f"HTTP {exc.http_status} " if exc.http_status else ""
        return f"{status}{exc.message}".strip()
    return f"{type(exc).__name__}: {exc}"


async def _exchange_checks(cfg: Config) -> list[Check]:
    key, secret = cfg.credentials()
    have_key = bool(key and secret)
    # No client-side rate limits (a handful of calls) and one attempt per read: a
    # preflight reports what the exchange says now rather than retrying it away.
    client = BtcTurkClient(cfg.rest_url, key or None, secret or None,
                           timeout_s=cfg.exchange.timeout_s, read_attempts=1,
                           rate_limits=False)
    checks: list[Check] = []
    try:
        # Clock first: a skewed clock also breaks every signed call below, and this
        # line is the one that says why.
        try:
            before = time.time() * 1000
            server = await client.server_time()
            after = time.time() * 1000
            checks.append(judge_clock_skew(int(server - (before + after) / 2), after - before,
                                           None))
        except BtcTurkError as exc:
            checks.append(judge_clock_skew(None, None, _err(exc)))

        free: dict[str, Decimal] | None = None
        key_error: str | None = None
        if have_key:
            try:
                free = {b.asset.upper(): b.free for b in await client.balances()}
            except BtcTurkError as exc:
                key_error = _err(exc)
        checks.append(judge_api_key(have_key, key_error))
        checks.append(await _trade_permission(client, have_key))

        sizes, sizes_error = strategy_sizes(cfg)
        rules: dict[str, SymbolRule] | None = None
        rules_error: str | None = sizes_error
        if sizes_error is None:
            try:
                info = await client.exchange_info()
                rules = {s.name.upper(): SymbolRule(s.name, s.status, s.tick_size,
                                                    s.min_total, s.denominator)
                         for s in info.symbols}
            except BtcTurkError as exc:
                rules_error = _err(exc)
        checks.append(judge_exchange_rules(cfg.marketdata.symbols, rules, sizes, rules_error))

        risk = cfg.risk
        exposure = risk.max_position_try_per_symbol * len(cfg.marketdata.symbols)
        # One order of the largest configured size must be fundable above the reserve.
        entry = max(sizes.values(), default=risk.min_order_notional_try)
        checks.append(judge_balances(free, risk.cash_asset.upper(), risk.try_cash_reserve,
                                     entry, exposure,
                                     key_error or ("no API key" if not have_key else None)))
        checks.append(await _foreign_orders(cfg, client, have_key))
    finally:
        await client.close()
    return checks


def strategy_sizes(cfg: Config) -> tuple[dict[str, Decimal], str | None]:
    """The order values the configured plug-in places (its ``order_sizes``), in the
    quote currency, plus risk's per-order cap if set. (sizes, error): a strategy
    config that does not load is a FAIL with its reason, not a crash."""
    try:
        strategy = load_strategy(cfg.strategy)
    except ConfigError as exc:
        return {}, f"strategy config: {exc}"
    sizes = {f"strategy.{k}": v for k, v in strategy.order_sizes().items()}
    if cfg.risk.max_notional_per_order_try > 0:
        sizes["risk.max_notional_per_order_try"] = cfg.risk.max_notional_per_order_try
    return sizes, None


async def _trade_permission(client: BtcTurkClient, have_key: bool) -> Check:
    if not have_key:
        return judge_trade_permission(False, None, "")
    try:
        await client.cancel_order(TRADE_PROBE_ORDER_ID)
    except BtcTurkError as exc:
        return judge_trade_permission(have_key, exc.http_status, exc.message)
    return judge_trade_permission(have_key, 200, "SUCCESS")


async def _foreign_orders(cfg: Config, client: BtcTurkClient, have_key: bool) -> Check:
    prefix = cfg.executor.client_id_prefix
    if not have_key:
        return judge_foreign_orders(None, prefix, "no API key")
    try:
        orders = await client.open_orders()
    except BtcTurkError as exc:
        return judge_foreign_orders(None, prefix, _err(exc))
    foreign = [ForeignOrder(o.id, o.client_order_id or "", o.pair, o.side, o.price, o.amount)
               for o in orders if not (o.client_order_id or "").startswith(prefix)]
    return judge_foreign_orders(foreign, prefix, None)


def db_facts(path: Path, settle_window_s: float, now: float | None = None) -> DbFacts:
    """Read-only: integrity, unresolved keys and latches of the executor's DB."""
    if not path.exists():
        return DbFacts(exists=False)
    now = time.time() if now is None else now
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        return DbFacts(exists=True, error=f"cannot open read-only: {exc}")
    try:
        conn.setbusytimeout(2000)
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        stale = fresh = 0
        if "idempotency_keys" in tables:
            for (updated,) in conn.execute(
                    "SELECT updated_at FROM idempotency_keys WHERE status IN (?, ?)", UNRESOLVED):
                if now - float(updated) > settle_window_s:
                    stale += 1
                else:
                    fresh += 1
        latches: tuple[tuple[str, bool, str], ...] = ()
        if "latches" in tables:
            latches = tuple((str(n), bool(v), str(r)) for n, v, r in conn.execute(
                "SELECT name, value, reason FROM latches ORDER BY name"))
        return DbFacts(exists=True, integrity=integrity, unresolved_stale=stale,
                       unresolved_fresh=fresh, latches=latches)
    except apsw.Error as exc:
        return DbFacts(exists=True, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _free_bytes(path: Path) -> int | None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # not created yet: judge the filesystem it will live on
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def recorder_probe(path: Path) -> str | None:
    """Create (if needed) the recordings dir, write, fsync and remove a probe file."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = path / f".preflight-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"preflight\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def local_checks(cfg: Config) -> list[Check]:
    db_path = cfg.path(cfg.executor.db_path)
    facts = db_facts(db_path, cfg.executor.settle_window_s)
    rec = cfg.path(cfg.recorder.path)
    disks = {str(p): _free_bytes(p) for p in
             dict.fromkeys((db_path.parent, cfg.log_path, rec))}
    return [judge_db(facts, str(db_path)), judge_latches(facts, cfg.gates.kill_switch),
            judge_disk(disks), judge_recorder(str(rec), recorder_probe(rec))]


async def run_preflight(cfg: Config) -> Report:
    """Every check; an exchange that cannot be reached FAILs its checks, never hangs."""
    if cfg.mode == "dry-run":
        exchange = [Check("exchange", "WARN", "dry-run: no authenticated exchange to check")]
    else:
        exchange = await _exchange_checks(cfg)
    local = await asyncio.to_thread(local_checks, cfg)
    return make_report(cfg.mode, cfg.rest_url if cfg.mode != "dry-run" else "",
                       [*exchange, *local])


def record_arming(cfg: Config, report: Report, armed: bool) -> None:
    """Store the report with the arming decision, in the executor's DB under its lock
    (the caller has checked that no supervisor, hence no executor, is running)."""
    db_path = cfg.path(cfg.executor.db_path)
    fd = acquire_lock(db_path)
    try:
        db = ExecutorDB(db_path, synchronous=cfg.executor.db_synchronous)
        try:
            db.record_arming(cfg.mode, armed, report.to_json().decode(), time.time())
        finally:
            db.close()
    finally:
        os.close(fd)
