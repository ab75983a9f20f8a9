"""``why``: an approved-and-filled order and a rejected intent from a real paper session;
the PnL attribution on its own."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import apsw
from hypothesis import given
from hypothesis import strategies as st

from actors.supervisor.why import REASON_LIMITS, pnl_contribution
from bus.messages import Fill, RiskDecision, packet_decoder
from shared.pnl import PositionState, apply_fill
from shared.recording import read_recording
from tests.helpers import wait_for


def _fill(tid: str, side: str, price: str, qty: str, fee: str) -> Fill:
    return Fill(trade_id=tid, exchange_order_id=1, client_order_id="c", symbol="BTCTRY",
                side=side, price=Decimal(price), quantity=Decimal(qty), fee=Decimal(fee),
                fee_asset="TRY", ts_ms=0)


def test_pnl_contribution_is_the_closing_orders_share() -> None:
    fills = [_fill("a", "buy", "100", "2", "0.2"), _fill("b", "sell", "110", "1", "0.11"),
             _fill("c", "sell", "90", "1", "0.09")]
    assert pnl_contribution(fills, {"a"}) == {"realized": "0", "fees": "0.2", "net": "-0.2",
                                              "position_after": "0"}
    # the first sell closes half at +10 against an average cost of 100, less its fee
    b = pnl_contribution(fills, {"b"})
    assert Decimal(b["realized"]) == 10 and Decimal(b["net"]) == Decimal("9.89")
    assert Decimal(pnl_contribution(fills, {"c"})["net"]) == Decimal("-10.09")
    # the parts add up to the round trip: 0 gross, minus every fee
    total = sum(Decimal(pnl_contribution(fills, {t})["net"]) for t in "abc")
    assert total == Decimal("-0.40")


def _db_rows(db: Path, sql: str) -> list[tuple]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _rejected(rec: Path) -> list[RiskDecision]:
    out = []
    for r in read_recording(rec, topics=["decision."]):
        body = packet_decoder.decode(r.payload).body
        if isinstance(body, RiskDecision) and body.verdict == "rejected":
            out.append(body)
    return out


def test_why_filled_and_rejected(make_pipeline, tmp_path: Path) -> None:
    p = make_pipeline({"risk": {"cooldown_s": 0.5},
                       "strategy": {"reject_backoff_s": 0.2, "throttle_ms": 100}})
    p.start()
    db, rec = tmp_path / "data" / "btcbot.db", tmp_path / "recordings"
    filled = wait_for(lambda: _db_rows(db, "SELECT o.client_order_id FROM orders o JOIN fills f "
                                           "ON f.client_order_id = o.client_order_id LIMIT 1"),
                      timeout=90, interval=1.0, what="an order with a fill")
    cid = filled[0][0]
    assert p.cli("kill-switch", "on", "--reason", "why-test").returncode == 0
    rejected = wait_for(lambda: [d for d in _rejected(rec) if "gate:kill_switch" in d.reasons],
                        timeout=60, interval=1.0, what="a kill-switch rejection recorded")

    r = p.cli("why", cid, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["found"] and doc["client_order_id"] == cid
    assert doc["book"]["bids"] and doc["book"]["asks"] and doc["book"]["age_at_intent_ms"] >= 0
    assert doc["strategy"]["reason"]
    assert doc["risk"]["verdict"] in ("approved", "resized")
    assert doc["risk"]["limits"]["cooldown_s"] == "0.5"  # the session's own config
    assert doc["key"]["status"] == "COMMITTED"
    states = [h["state"] for h in doc["state_history"]]
    assert states and states[0] in ("PENDING", "OPEN") and any(
        s in ("OPEN", "PARTIAL", "FILLED") for s in states), states
    assert doc["send"]["latency_ms"] is not None and doc["send"]["latency_ms"] >= 0
    assert doc["fills"] and all(Decimal(f["fee"]) >= 0 for f in doc["fills"])
    assert Decimal(doc["pnl"]["net"]) == Decimal(doc["pnl"]["realized"]) - Decimal(
        doc["pnl"]["fees"])
    times = [e["at"] for e in doc["timeline"]]
    assert times == sorted(times) and len(times) >= 5

    text = p.cli("why", cid)
    assert text.returncode == 0 and "timeline:" in text.stdout and "send → ack" in text.stdout

    intent = rejected[0].intent_id
    r = p.cli("why", intent, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["risk"]["verdict"] == "rejected"
    codes = {x["code"]: x for x in doc["risk"]["reasons"]}
    assert "gate:kill_switch" in codes
    for code, reason in codes.items():
        if code in REASON_LIMITS:
            assert "value" in reason, reason  # every limit code names its limit value
    assert doc["outcome"].startswith("rejected by risk") and doc["send"] is None
    assert doc["strategy"]["reason"] and doc["book"]["bids"]

    assert p.cli("why", "no-such-id").returncode == 1


fill_strategy = st.builds(
    lambda side, p, q, fee: (side, Decimal(p), Decimal(q) / 1000, Decimal(fee) / 100),
    st.sampled_from(["buy", "sell"]), st.integers(1, 10_000), st.integers(1, 5_000),
    st.integers(0, 500))


@given(st.lists(st.tuples(fill_strategy, st.integers(0, 3)), min_size=1, max_size=30))
def test_contributions_add_up_to_the_symbols_pnl(rows: list) -> None:
    """However fills are split among orders, the orders' contributions sum to the
    symbol's realised PnL and fees: figures add up."""
    fills = [Fill(trade_id=f"t{i}", exchange_order_id=o, client_order_id=f"c{o}",
                  symbol="BTCTRY", side=side, price=p, quantity=q, fee=fee, fee_asset="TRY",
                  ts_ms=i) for i, ((side, p, q, fee), o) in enumerate(rows)]
    parts = [pnl_contribution(fills, {f.trade_id for f in fills if f.exchange_order_id == o})
             for o in range(4)]
    pos = PositionState()
    for f in fills:
        pos = apply_fill(pos, f.side, f.price, f.quantity, f.fee)
    assert sum(Decimal(x["realized"]) for x in parts) == pos.realized_pnl
    assert sum(Decimal(x["fees"]) for x in parts) == pos.fees
    assert sum(Decimal(x["net"]) for x in parts) == pos.realized_pnl - pos.fees


def test_explain_never_sent_and_never_decided() -> None:
    from actors.supervisor.why import WhyFacts, explain, render_text
    from bus.messages import Intent

    intent = Intent(intent_id="i-1", symbol="BTCTRY", side="buy", order_type="limit",
                    price=Decimal("100"), quantity=Decimal("1"), reason="spread wide",
                    ttl_s=60, strategy="s", created_wall_ns=1_700_000_000_000_000_000)
    approved = RiskDecision(intent_id="i-1", symbol="BTCTRY", verdict="approved", reasons=[],
                            side="buy", order_type="limit", price=Decimal("100"),
                            quantity=Decimal("1"), requested_quantity=Decimal("1"),
                            client_order_id="bb-1", executor_status="rejected:gate")
    doc = explain(WhyFacts(query="i-1", intent=(intent.created_wall_ns, intent),
                           decisions=[(intent.created_wall_ns + 1000, approved)]))
    assert doc["outcome"].startswith("approved by risk but never sent")
    assert "rejected:gate" in doc["outcome"] and doc["send"] is None
    assert "the triggering book is not in the recordings" in doc["notes"]
    assert "never sent" in render_text(doc)
    undecided = explain(WhyFacts(query="i-1", intent=(intent.created_wall_ns, intent)))
    assert undecided["outcome"].startswith("never decided")
    assert not explain(WhyFacts(query="x"))["found"]
