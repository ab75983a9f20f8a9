"""End to end, as an operator meets it: the paper pipeline trades out of the box,
status shows it, and the operator controls (kill switch, pause) bite at once."""

from __future__ import annotations

import json
import re
import subprocess
import time
from decimal import Decimal as D

from tests.helpers import REPO, SUPERVISOR, wait_for


def counter(doc: dict, actor: str, name: str) -> int:
    """One actor's heartbeat counter in a status document."""
    return int(next(a for a in doc["actors"] if a["name"] == actor)["counters"].get(name, 0))


def _counter(p, actor: str, name: str) -> int:
    return counter(p.status(), actor, name)


def test_paper_session_trades_and_status_shows_it(make_pipeline) -> None:
    p = make_pipeline()
    p.start()

    def traded() -> dict | None:
        doc = p.status()
        filled = [x for x in doc["positions"] if D(x["quantity"]) != 0]
        # heartbeat counters lag the live snapshot by up to one interval (each actor's own)
        counted = counter(doc, "executor", "committed") >= 1 and counter(
            doc, "risk", "approved") >= 1
        return doc if filled and doc["pnl"] and counted and doc["trading"][
            "state"] == "TRADING" else None

    doc = wait_for(traded, timeout=60, interval=1.0,
                   what="fills, PnL and TRADING within a minute")
    assert counter(doc, "executor", "submitted") >= 1
    keys = doc["idempotency"]
    assert all(isinstance(keys[k], int) for k in ("pending", "unknown", "failed")), keys
    assert keys["unknown"] == 0, keys
    assert {x["symbol"] for x in doc["pnl"]} <= {"BTCTRY", "ETHTRY", "SOLTRY"}
    # one PnL definition: every row carries its mark and net, and the total adds up
    for row in doc["pnl"]:
        assert D(row["net"]) == D(row["realized"]) + D(row["unrealized"]) - D(row["fees"])
        assert row["mark"] is not None
    t = doc["pnl_total"]
    assert D(t["net"]) == sum(D(r["net"]) for r in doc["pnl"])
    assert D(t["net"]) == D(t["realized"]) + D(t["unrealized"]) - D(t["fees"])

    # numbers printed plainly: no Decimal anywhere in exponent form (0E-8). A whole
    # token only: hex client order ids (…3e05f…) hold the same characters.
    exponent = re.compile(r"(?<![0-9A-Za-z.])\d+(\.\d+)?[eE][-+]?\d+(?![0-9A-Za-z])")
    assert not exponent.search(json.dumps(doc["pnl"]) + json.dumps(
        doc["pnl_total"]) + json.dumps(doc["positions"]) + json.dumps(doc["balances"]))
    assert exponent.search("fees 0E-8 TRY") and not exponent.search("bb-a3e05f91 x1e5y")
    text = p.cli("status").stdout
    assert not exponent.search(text), text
    for word in ("executor", "READY", "positions and PnL", "idempotency keys", "total:"):
        assert word in text


def test_kill_switch_and_pause_stop_approvals_and_persist(make_pipeline) -> None:
    p = make_pipeline({"risk": {"cooldown_s": 0.5},
                       "strategy": {"reject_backoff_s": 0.2, "throttle_ms": 100}})
    p.start()
    wait_for(lambda: _counter(p, "risk", "approved") >= 1, timeout=60, what="first approval")

    r = p.cli("kill-switch", "on", "--reason", "test")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: p.status()["latch"]["kill_switch"] is True, timeout=10, what="latch")
    assert p.status()["trading"]["state"] == "HALTED"
    time.sleep(1.5)  # decisions in flight, and one heartbeat interval for the counters
    approved = _counter(p, "risk", "approved")
    wait_for(lambda: _counter(p, "risk", "reason.gate:kill_switch") >= 1, timeout=30,
             what="a rejection for gate:kill_switch")
    assert _counter(p, "risk", "approved") == approved

    # the latch lives in the executor's DB: it survives a restart of every actor
    for actor in ("executor", "risk", "strategy"):
        assert p.cli("restart", actor).returncode == 0
    wait_for(lambda: p.status()["latch"]["kill_switch"] is True, timeout=10, what="persisted")
    time.sleep(2.0)
    assert _counter(p, "risk", "approved") == 0  # the new risk never approved anything

    assert p.cli("kill-switch", "off").returncode == 0
    wait_for(lambda: p.status()["latch"]["kill_switch"] is False, timeout=10, what="cleared")

    before = time.time()
    assert p.cli("pause").returncode == 0
    wait_for(lambda: p.status()["latch"]["paused"] is True, timeout=10, what="paused")
    assert "gate:paused" in p.status()["trading"]["reasons"]
    # The time it was set comes from the executor's DB: a second pause keeps it, and
    # so does a restart of the executor.
    set_at = wait_for(lambda: p.status()["latch"]["set_at"].get("paused"), timeout=10,
                      what="the paused latch's set time")
    assert before - 1 <= set_at <= time.time(), (before, set_at)
    assert p.cli("pause").returncode == 0
    assert p.cli("restart", "executor").returncode == 0
    wait_for(lambda: p.status()["latch"]["paused"] is True, timeout=20, what="executor back")
    assert p.status()["latch"]["set_at"] == {"paused": set_at}
    assert "latch set at: paused=" in p.cli("status").stdout
    assert p.cli("resume").returncode == 0
    wait_for(lambda: p.status()["latch"]["paused"] is False, timeout=10, what="resumed")
    wait_for(lambda: _counter(p, "risk", "approved") >= 1, timeout=60,
             what="approvals again after kill switch off and resume")


def test_logs_command(make_pipeline) -> None:
    p = make_pipeline()
    p.start()
    r = p.cli("logs", "risk", "-n", "3")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 3
    assert p.cli("logs", "nosuch").returncode == 2
    follow = subprocess.Popen([*SUPERVISOR, "--config", str(p.config), "logs", "--all", "-f",
                               "-n", "0"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        p.cli("restart", "reconciler")
        deadline = time.monotonic() + 20
        seen = ""
        while time.monotonic() < deadline and "reconciler |" not in seen:
            seen += follow.stdout.readline()
        assert "reconciler" in seen
    finally:
        follow.kill()
        follow.wait()
    doc = json.loads(p.cli("status", "--json").stdout)
    assert doc["running"] is True
