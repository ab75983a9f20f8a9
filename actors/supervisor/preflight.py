"""Preflight before arming live: each check judged PASS / WARN / FAIL with one line why.

This module is the pure part: every ``judge_*`` function takes facts already gathered
(by ``actors/supervisor/preflight_probe.py``, which does the I/O) and returns a
``Check``. Keeping the verdicts free of sockets and files makes each rule testable on
its own and keeps the probe a plain list of reads.

Bounds that are BTCTurk facts, not preferences:
- the exchange refuses a signed request whose ``X-Stamp`` is more than 5 s away from its
  server time (``STAMP_TOLERANCE_MS``), so a skew at or beyond it FAILs; half of it
  WARNs, because a clock drifting that far will cross it within hours;
- there is no endpoint that lists a key's permissions: trade permission is inferred
  from a cancel of order id 0, an id no order ever has. A key allowed to trade reaches
  the order lookup and is told "no order matches" (or, since 2024-12, a plain success);
  a key without the permission is refused before the lookup (HTTP 401/403).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import msgspec

Verdict = Literal["PASS", "WARN", "FAIL"]

STAMP_TOLERANCE_MS = 5000  # BTCTurk: |X-Stamp - server time| <= 5 s
SKEW_WARN_MS = STAMP_TOLERANCE_MS // 2
DISK_FAIL_BYTES = 100 * 1024 * 1024
DISK_WARN_BYTES = 1024 * 1024 * 1024
TRADE_PROBE_ORDER_ID = 0  # no BTCTurk order has id 0


class Check(msgspec.Struct, frozen=True):
    name: str
    verdict: Verdict
    reason: str
    detail: dict[str, Any] = {}


class Report(msgspec.Struct, frozen=True):
    mode: str
    exchange_url: str
    generated_at: float
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """Nothing FAILed (WARNs do not block arming)."""
        return all(c.verdict != "FAIL" for c in self.checks)

    def counts(self) -> dict[str, int]:
        out = {"PASS": 0, "WARN": 0, "FAIL": 0}
        for c in self.checks:
            out[c.verdict] += 1
        return out

    def to_json(self) -> bytes:
        return msgspec.json.encode({**msgspec.to_builtins(self), "ok": self.ok,
                                    "counts": self.counts()})


def make_report(mode: str, exchange_url: str, checks: Iterable[Check],
                now: float | None = None) -> Report:
    return Report(mode=mode, exchange_url=exchange_url,
                  generated_at=time.time() if now is None else now, checks=list(checks))


def render_text(report: Report) -> str:
    width = max((len(c.name) for c in report.checks), default=4)
    lines = [f"preflight ({report.mode}, {report.exchange_url})"]
    for c in report.checks:
        lines.append(f"  {c.verdict:<4}  {c.name:<{width}}  {c.reason}")
    n = report.counts()
    lines.append(f"{n['PASS']} passed, {n['WARN']} warnings, {n['FAIL']} failed: "
                 + ("ready to arm" if report.ok else "NOT safe to arm"))
    return "\n".join(lines)


# --- the exchange ------------------------------------------------------------------------


def judge_api_key(key_present: bool, error: str | None) -> Check:
    """``error`` is the signed read's failure (None: it answered)."""
    if not key_present:
        return Check("api_key", "FAIL", "no API key or secret configured "
                     "(BTCTURK_API_KEY / BTCTURK_API_SECRET or exchange.api_secret_file)")
    if error is not None:
        return Check("api_key", "FAIL", f"signed read (GET /api/v1/users/balances) refused: "
                     f"{error}")
    return Check("api_key", "PASS", "accepted: signed read GET /api/v1/users/balances answered")


def judge_trade_permission(key_present: bool, http_status: int | None, answer: str) -> Check:
    """The answer to DELETE /api/v1/order?id=0 (see the module doc). ``http_status`` is
    None when the call never got an HTTP answer (``answer`` says why)."""
    how = f"inferred from DELETE /api/v1/order?id={TRADE_PROBE_ORDER_ID} (no such order)"
    if not key_present:
        return Check("trade_permission", "FAIL", "no API key to probe")
    if http_status is None:
        return Check("trade_permission", "FAIL", f"could not probe: {answer}; {how}")
    if http_status in (401, 403):
        return Check("trade_permission", "FAIL",
                     f"key refused a cancel ({http_status} {answer}): no trade permission; {how}")
    if http_status == 200 or "NO_ORDER" in answer.upper() or "NOT FOUND" in answer.upper():
        return Check("trade_permission", "PASS",
                     f"key may trade: the cancel reached the order lookup ({answer}); {how}")
    return Check("trade_permission", "WARN", f"unexpected answer {http_status} {answer}; {how}")


def judge_clock_skew(skew_ms: int | None, rtt_ms: float | None, error: str | None) -> Check:
    """``skew_ms`` = server time − local time at the midpoint of the round trip."""
    if skew_ms is None or rtt_ms is None:
        return Check("clock_skew", "FAIL", f"server time unavailable: {error}")
    detail = {"skew_ms": skew_ms, "rtt_ms": round(rtt_ms, 1),
              "bound_ms": STAMP_TOLERANCE_MS}
    # The midpoint estimate is off by at most half the round trip.
    worst = abs(skew_ms) + rtt_ms / 2
    text = (f"local clock {'behind' if skew_ms > 0 else 'ahead of'} the exchange by "
            f"{abs(skew_ms)} ms (±{rtt_ms / 2:.0f} ms); BTCTurk refuses stamps beyond "
            f"±{STAMP_TOLERANCE_MS} ms")
    if worst >= STAMP_TOLERANCE_MS:
        return Check("clock_skew", "FAIL", text, detail)
    if worst >= SKEW_WARN_MS:
        return Check("clock_skew", "WARN", text + "; sync the clock (chrony/ntpd)", detail)
    return Check("clock_skew", "PASS", text, detail)


@dataclass(frozen=True, slots=True)
class SymbolRule:
    """The exchangeinfo facts a check needs (decoupled from the client's model)."""

    name: str
    status: str
    tick_size: Decimal | None
    min_total: Decimal | None
    quote: str


def judge_exchange_rules(symbols: Sequence[str], rules: dict[str, SymbolRule] | None,
                         sizes: dict[str, Decimal], error: str | None) -> Check:
    """Every configured symbol is listed, TRADING, has a tick and a minimum total, and
    every configured order size (``sizes``: config field → TRY) clears that minimum."""
    if rules is None:
        return Check("exchange_rules", "FAIL", f"exchangeinfo unavailable: {error}")
    problems: list[str] = []
    for sym in symbols:
        rule = rules.get(sym.replace("_", "").upper())
        if rule is None:
            problems.append(f"{sym}: not listed by the exchange")
            continue
        if rule.status != "TRADING":
            problems.append(f"{sym}: status {rule.status}")
        if rule.tick_size is None or rule.tick_size <= 0 or rule.min_total is None:
            problems.append(f"{sym}: tick size or minimum total missing")
            continue
        for field, size in sizes.items():
            if size < rule.min_total:
                problems.append(f"{sym}: {field}={size} below the minimum total "
                                f"{rule.min_total} {rule.quote}")
    if problems:
        return Check("exchange_rules", "FAIL", "; ".join(problems))
    return Check("exchange_rules", "PASS",
                 f"rules loaded for {', '.join(symbols)}; configured sizes "
                 f"({', '.join(f'{k}={v}' for k, v in sizes.items())}) clear every minimum")


def judge_balances(free: dict[str, Decimal] | None, cash_asset: str, reserve: Decimal,
                   entry: Decimal, full_exposure: Decimal, error: str | None) -> Check:
    """FAIL when the free quote balance cannot fund one entry above the reserve; WARN
    when it cannot fund the configured position limit on every symbol."""
    if free is None:
        return Check("balances", "FAIL", f"balances unavailable: {error}")
    have = free.get(cash_asset, Decimal(0))
    need_one, need_all = reserve + entry, reserve + full_exposure
    detail = {"asset": cash_asset, "free": str(have), "one_entry": str(need_one),
              "full_limits": str(need_all)}
    if have < need_one:
        return Check("balances", "FAIL", f"free {cash_asset} {have} < reserve {reserve} + one "
                     f"entry {entry} = {need_one}", detail)
    if have < need_all:
        return Check("balances", "WARN", f"free {cash_asset} {have} funds entries but not the "
                     f"configured limits on every symbol (reserve + limits = {need_all})", detail)
    return Check("balances", "PASS", f"free {cash_asset} {have} covers reserve + every "
                 f"symbol's position limit ({need_all})", detail)


@dataclass(frozen=True, slots=True)
class ForeignOrder:
    id: int
    client_order_id: str
    pair: str
    side: str
    price: Decimal
    amount: Decimal


def judge_foreign_orders(orders: list[ForeignOrder] | None, prefix: str,
                         error: str | None) -> Check:
    """Open orders on the account without our client-id prefix: not ours to manage, but
    they lock balance and trade against the same books, so the operator must know."""
    if orders is None:
        return Check("foreign_orders", "FAIL", f"open orders unavailable: {error}")
    if not orders:
        return Check("foreign_orders", "PASS",
                     f"no open order without our client-id prefix {prefix!r}")
    listed = ", ".join(f"#{o.id} {o.pair} {o.side} {o.amount}@{o.price} "
                       f"client id {o.client_order_id or '-'!r}" for o in orders[:10])
    more = f" and {len(orders) - 10} more" if len(orders) > 10 else ""
    return Check("foreign_orders", "WARN",
                 f"{len(orders)} open order(s) not ours (prefix {prefix!r}): {listed}{more}",
                 {"orders": [_fo_dict(o) for o in orders]})


def _fo_dict(o: ForeignOrder) -> dict[str, Any]:
    return {"id": o.id, "client_order_id": o.client_order_id, "pair": o.pair,
            "side": o.side, "price": str(o.price), "amount": str(o.amount)}


# --- local state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DbFacts:
    exists: bool
    integrity: str = ""  # PRAGMA integrity_check's first row ("ok" when sound)
    unresolved_stale: int = 0  # PENDING/UNKNOWN keys older than the settle window
    unresolved_fresh: int = 0  # ... younger (an order in flight)
    latches: tuple[tuple[str, bool, str], ...] = ()
    error: str = ""


def judge_db(db: DbFacts, path: str) -> Check:
    if db.error:
        return Check("db_integrity", "FAIL", f"{path}: {db.error}")
    if not db.exists:
        return Check("db_integrity", "PASS", f"{path}: no database yet (first start creates it)")
    if db.integrity != "ok":
        return Check("db_integrity", "FAIL", f"{path}: integrity_check: {db.integrity}")
    if db.unresolved_stale:
        return Check("db_integrity", "FAIL",
                     f"{path}: {db.unresolved_stale} idempotency key(s) PENDING/UNKNOWN past the "
                     "settle window (an order whose fate is unknown)")
    if db.unresolved_fresh:
        return Check("db_integrity", "WARN", f"{path}: integrity ok; {db.unresolved_fresh} "
                     "key(s) in flight (younger than the settle window)")
    return Check("db_integrity", "PASS", f"{path}: integrity ok, every idempotency key resolved")


def judge_latches(db: DbFacts, config_kill_switch: bool) -> Check:
    set_ = [(n, r) for n, v, r in db.latches if v]
    if config_kill_switch:
        set_.append(("kill_switch", "gates.kill_switch / BTCBOT_KILL_SWITCH"))
    if db.error and not set_:
        return Check("latches", "FAIL", f"latch state unknown: {db.error}")
    if set_:
        return Check("latches", "FAIL", "set: " + "; ".join(f"{n} ({r or 'no reason'})"
                                                            for n, r in set_))
    return Check("latches", "PASS", "kill switch, safety latch and pause all clear")


def judge_disk(free_by_path: dict[str, int | None]) -> Check:
    """Free bytes on the filesystems of data/, logs/ and recordings/."""
    worst: Verdict = "PASS"
    parts = []
    for path, free in free_by_path.items():
        if free is None:
            worst = "FAIL"
            parts.append(f"{path}: unreadable")
            continue
        parts.append(f"{path}: {free / 1e9:.2f} GB free")
        if free < DISK_FAIL_BYTES:
            worst = "FAIL"
        elif free < DISK_WARN_BYTES and worst == "PASS":
            worst = "WARN"
    bounds = f" (FAIL < {DISK_FAIL_BYTES // 2**20} MiB, WARN < {DISK_WARN_BYTES // 2**30} GiB)"
    return Check("disk_space", worst, "; ".join(parts) + bounds)


def judge_recorder(path: str, error: str | None) -> Check:
    if error is not None:
        return Check("recorder_writable", "FAIL", f"{path}: {error}")
    return Check("recorder_writable", "PASS", f"{path}: wrote, fsynced and removed a probe file")
