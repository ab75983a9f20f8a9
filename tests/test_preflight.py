"""Preflight: the pure verdicts, then the command against a running paper pipeline and
the simulator with FAILs forced (skewed clock, missing key, a foreign order)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from decimal import Decimal
from pathlib import Path

import apsw
import pytest

from actors.executor.db import ExecutorDB
from actors.supervisor.preflight import (
    STAMP_TOLERANCE_MS,
    DbFacts,
    SymbolRule,
    judge_balances,
    judge_clock_skew,
    judge_db,
    judge_disk,
    judge_exchange_rules,
    judge_latches,
    judge_trade_permission,
)
from actors.supervisor.preflight_probe import db_facts
from shared.btcturk.client import BtcTurkClient
from tests.helpers import Pipeline, base_config, write_config
from tests.sim_fixtures import SimProcess, start_sim_process

# --- pure verdicts -----------------------------------------------------------------------


def test_clock_skew_bounds() -> None:
    assert judge_clock_skew(100, 4.0, None).verdict == "PASS"
    assert judge_clock_skew(-3000, 4.0, None).verdict == "WARN"
    assert judge_clock_skew(STAMP_TOLERANCE_MS - 1, 4.0, None).verdict == "FAIL"  # ± rtt/2
    assert judge_clock_skew(-9000, 4.0, None).verdict == "FAIL"
    assert judge_clock_skew(None, None, "refused").verdict == "FAIL"


def test_trade_permission_inference() -> None:
    assert judge_trade_permission(True, 400, "NO_ORDER_MATCHES_YOUR_REQUEST").verdict == "PASS"
    assert judge_trade_permission(True, 200, "SUCCESS").verdict == "PASS"
    refused = judge_trade_permission(True, 403, "Unauthorized - Invalid Request")
    assert refused.verdict == "FAIL" and "no trade permission" in refused.reason
    assert "DELETE /api/v1/order?id=0" in refused.reason  # says how it was inferred
    assert judge_trade_permission(False, None, "").verdict == "FAIL"


def test_exchange_rules_sizes_and_listing() -> None:
    rule = SymbolRule("BTCTRY", "TRADING", Decimal("1"), Decimal("100"), "TRY")
    ok = judge_exchange_rules(["BTCTRY"], {"BTCTRY": rule}, {"entry": Decimal("100")}, None)
    assert ok.verdict == "PASS"
    small = judge_exchange_rules(["BTCTRY"], {"BTCTRY": rule}, {"entry": Decimal("99.9")}, None)
    assert small.verdict == "FAIL" and "entry=99.9" in small.reason
    missing = judge_exchange_rules(["XYZTRY"], {"BTCTRY": rule}, {}, None)
    assert missing.verdict == "FAIL" and "XYZTRY: not listed" in missing.reason
    halted = SymbolRule("BTCTRY", "HALT", Decimal("1"), Decimal("100"), "TRY")
    assert judge_exchange_rules(["BTCTRY"], {"BTCTRY": halted}, {}, None).verdict == "FAIL"


def test_balances_cover_limits() -> None:
    def judge(free: str) -> str:
        return judge_balances({"TRY": Decimal(free)}, "TRY", Decimal(300), Decimal(100),
                              Decimal(15000), None).verdict
    assert judge("399.99") == "FAIL"
    assert judge("400") == "WARN"
    assert judge("15300") == "PASS"
    assert judge_balances(None, "TRY", Decimal(0), Decimal(0), Decimal(0), "x").verdict == "FAIL"


def test_db_latch_disk_verdicts() -> None:
    assert judge_db(DbFacts(exists=False), "db").verdict == "PASS"
    assert judge_db(DbFacts(exists=True, integrity="*** page 3 bad"), "db").verdict == "FAIL"
    assert judge_db(DbFacts(exists=True, integrity="ok", unresolved_stale=1), "db").verdict \
        == "FAIL"
    assert judge_db(DbFacts(exists=True, integrity="ok", unresolved_fresh=1), "db").verdict \
        == "WARN"
    latched = DbFacts(exists=True, integrity="ok", latches=(("safety_latch", True, "drift"),))
    check = judge_latches(latched, False)
    assert check.verdict == "FAIL" and "safety_latch (drift)" in check.reason
    assert judge_latches(DbFacts(exists=True, integrity="ok"), True).verdict == "FAIL"
    assert judge_latches(DbFacts(exists=True, integrity="ok"), False).verdict == "PASS"
    assert judge_disk({"/a": 10 * 2**30}).verdict == "PASS"
    assert judge_disk({"/a": 10 * 2**30, "/b": 50 * 2**20}).verdict == "FAIL"
    assert judge_disk({"/a": None}).verdict == "FAIL"


def test_db_facts_read_only(tmp_path: Path) -> None:
    path = tmp_path / "btcbot.db"
    db = ExecutorDB(path)
    db.conn.execute("INSERT INTO idempotency_keys(action_type, key, status, mode, created_at, "
                    "updated_at, expires_at) VALUES ('submit','k1','UNKNOWN','live',0,0,0)")
    db.set_latch("kill_switch", True, "operator")
    facts = db_facts(path, settle_window_s=10.0, now=100.0)
    assert facts.integrity == "ok" and facts.unresolved_stale == 1
    assert ("kill_switch", True, "operator") in facts.latches
    db.close()
    before = path.stat().st_mtime_ns
    db_facts(path, 10.0)
    assert path.stat().st_mtime_ns == before  # read-only: the executor owns the file


# --- against the simulator and a paper pipeline --------------------------------------------


def _preflight(p: Pipeline, *args: str) -> tuple[int, dict]:
    r = p.cli("preflight", "--json", *args, timeout=60)
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def _checks(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


async def _foreign_order(sim: SimProcess | str, key: str, secret: str) -> int:
    url = sim if isinstance(sim, str) else sim.base_url
    async with BtcTurkClient(url, key, secret, rate_limits=False) as client:
        book = await client.order_book("BTCTRY", 5)
        price = (book.bids[0].price * Decimal("0.9")).quantize(Decimal(1))
        order = await client.submit_order("BTCTRY", "buy", "limit", Decimal("0.001"), price,
                                          "manual-by-hand-1")
        return order.id


def test_preflight_on_a_running_paper_pipeline(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    rc, doc = _preflight(p)
    checks = _checks(doc)
    assert rc == 0 and doc["ok"], doc
    for name in ("api_key", "trade_permission", "clock_skew", "exchange_rules", "balances",
                 "foreign_orders", "db_integrity", "latches", "disk_space", "recorder_writable"):
        assert name in checks, name
        assert checks[name]["verdict"] in ("PASS", "WARN"), checks[name]
    assert checks["foreign_orders"]["verdict"] == "PASS"

    sim_url = f"http://127.0.0.1:{p_port(p)}"
    oid = asyncio.run(_foreign_order(sim_url, "sim-api-key",
                                     "YnRjYm90LWV4Y2hhbmdlLXNpbS1zZWNyZXQtdjEhIQ=="))
    rc, doc = _preflight(p)
    foreign = _checks(doc)["foreign_orders"]
    assert foreign["verdict"] == "WARN" and f"#{oid}" in foreign["reason"], foreign
    assert "manual-by-hand-1" in foreign["reason"]

    r = p.cli("kill-switch", "on", "--reason", "preflight-test")
    assert r.returncode == 0, r.stderr
    rc, doc = _preflight(p)
    latches = _checks(doc)["latches"]
    assert rc == 1 and latches["verdict"] == "FAIL" and "preflight-test" in latches["reason"]
    text = p.cli("preflight").stdout
    assert "FAIL  latches" in text and "NOT safe to arm" in text

    # the simulator's clock jumps 8 s: the running pipeline's preflight names it
    req = urllib.request.Request(f"{sim_url}/sim/faults", method="POST", data=json.dumps(
        {"kind": "clock_skew", "offset_ms": -8000, "duration_s": 60}).encode())
    urllib.request.urlopen(req, timeout=5).read()
    rc, doc = _preflight(p)
    skew = _checks(doc)["clock_skew"]
    assert rc == 1 and skew["verdict"] == "FAIL" and "ahead of" in skew["reason"], skew


def p_port(p: Pipeline) -> int:
    import tomllib
    return int(tomllib.loads(p.config.read_text())["simulator"]["port"])


def _live_config(tmp_path: Path, sim: SimProcess, **extra: dict) -> Path:
    doc = base_config(tmp_path, mode="live",
                      exchange={"rest_url": sim.base_url, "ws_url": sim.ws_url},
                      gates={"live_trading": True, "live_trading_ack": "I_UNDERSTAND"},
                      **extra)
    return write_config(tmp_path, doc)


def test_preflight_fails_on_skewed_clock_and_live_start_refuses(
        tmp_path: Path, sim: SimProcess) -> None:
    sim.reset({"TRY": "100000"})
    config = _live_config(tmp_path, sim)
    env = {"BTCTURK_API_KEY": sim.api_key, "BTCTURK_API_SECRET": sim.api_secret}
    p = Pipeline(config, env=env)
    rc, doc = _preflight(p)
    assert rc == 0, doc

    sim.add_fault(kind="clock_skew", offset_ms=8000, duration_s=60)
    try:
        rc, doc = _preflight(p)
        checks = _checks(doc)
        assert rc == 1 and not doc["ok"]
        skew = checks["clock_skew"]
        assert skew["verdict"] == "FAIL" and 7000 < skew["detail"]["skew_ms"] < 9000, skew
        assert checks["api_key"]["verdict"] == "FAIL"  # the exchange refuses the stamps too

        r = p.cli("start", "--detach", timeout=60)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "live start refused" in r.stderr and "clock_skew" in r.stderr
        assert not (tmp_path / "run" / "supervisor.pid").exists()
    finally:
        sim.clear_faults()
    db = apsw.Connection(str(tmp_path / "data" / "btcbot.db"), flags=apsw.SQLITE_OPEN_READONLY)
    rows = db.execute("SELECT mode, armed, report FROM arming_records").fetchall()
    db.close()
    assert len(rows) == 1 and rows[0][0] == "live" and rows[0][1] == 0
    stored = json.loads(rows[0][2])
    assert not stored["ok"] and _checks(stored)["clock_skew"]["verdict"] == "FAIL"


def test_preflight_fails_without_a_key(tmp_path: Path, sim: SimProcess,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BTCTURK_API_KEY", raising=False)
    monkeypatch.delenv("BTCTURK_API_SECRET", raising=False)
    p = Pipeline(_live_config(tmp_path, sim))
    rc, doc = _preflight(p)
    checks = _checks(doc)
    assert rc == 1
    assert checks["api_key"]["verdict"] == "FAIL" and "no API key" in checks["api_key"]["reason"]
    assert checks["trade_permission"]["verdict"] == "FAIL"
    assert checks["clock_skew"]["verdict"] == "PASS"  # public, needs no key

    wrong = Pipeline(p.config, env={"BTCTURK_API_KEY": "not-a-key",
                                    "BTCTURK_API_SECRET": sim.api_secret})
    rc, doc = _preflight(wrong)
    assert rc == 1 and "refused" in _checks(doc)["api_key"]["reason"]


def test_preflight_finds_a_key_that_cannot_trade(tmp_path: Path) -> None:
    """A read-only key: the signed read passes, the harmless cancel is refused."""
    secret = "YnRjYm90LWV4Y2hhbmdlLXNpbS1zZWNyZXQtdjEhIQ=="
    sim = start_sim_process("--api-key", "ro-key-123456", "--api-secret", secret,
                            "--read-only-key", "ro-key-123456")
    try:
        p = Pipeline(_live_config(tmp_path, sim),
                     env={"BTCTURK_API_KEY": "ro-key-123456", "BTCTURK_API_SECRET": secret})
        rc, doc = _preflight(p)
        checks = _checks(doc)
        assert rc == 1
        assert checks["api_key"]["verdict"] == "PASS"
        perm = checks["trade_permission"]
        assert perm["verdict"] == "FAIL" and "no trade permission" in perm["reason"], perm
        assert "inferred from DELETE /api/v1/order?id=0" in perm["reason"]
        assert not sim.received_orders() or all(
            o.get("outcome", "").startswith("unauthorized") for o in sim.received_orders())
    finally:
        sim.stop()
