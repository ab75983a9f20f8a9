"""The dashboard's pure parts: hop latencies, the bus model, views and their HTML
(escaping), the access and confirm tokens, the audit file and the metrics text."""

from __future__ import annotations

import json
import os
import stat
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.dashboard.access import COMMANDS, ConfirmTokens, load_or_create_token
from actors.dashboard.audit import AuditLog
from actors.dashboard.metrics import Metrics
from actors.dashboard.model import BusModel, family
from actors.dashboard.statuswatch import StatusWatch, total_pnl
from actors.dashboard.views import PAGE_NAMES, build, dec, order_detail, reason_in_words
from actors.dashboard.web import _env
from bus.health import BusHealth
from bus.messages import (
    BookSnapshot,
    Envelope,
    Fill,
    Intent,
    OrderEvent,
    Packet,
    RiskDecision,
)

EVIL = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>"


def pkt(body: Any, mono_ns: int, source: str = "t", seq: int = 1) -> Packet:
    return Packet(Envelope(1, source, "inc", seq, time.time_ns(), mono_ns), body)


def status_doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "running": True, "mode": "paper",
        "exchange": {"kind": "simulator", "url": "http://127.0.0.1:1"},
        "trading": {"state": "HALTED", "reasons": ["gate:paused", f"actor:{EVIL}:STOPPED"]},
        "actors": [{"name": "risk", "pid": 10, "state": "READY", "ready": True, "restarts": 2,
                    "uptime_s": 75.0, "heartbeat_age_s": 0.4, "cpu_percent": 1.5,
                    "rss_bytes": 30_000_000, "counters": {"approved": 3, "rejected": 1,
                                                          "reason.gate:paused": 1,
                                                          "bus_gaps": 0, "bus_received": 9},
                    "info": {"daily_loss": "12.5", "max_daily_loss": "500"},
                    "last_exit": "", "gave_up": False},
                   {"name": "executor", "pid": 11, "state": "READY", "ready": True,
                    "restarts": 0, "uptime_s": 80.0, "heartbeat_age_s": 0.2,
                    "cpu_percent": 2.0, "rss_bytes": 40_000_000,
                    "counters": {"submitted": 5, "committed": 4, "failed": 1, "unknown": 0,
                                 "http_429": 2},
                    "info": {}, "last_exit": "", "gave_up": False}],
        "gates": {"market_data": {"BTCTRY": True}},
        "latch": {"kill_switch": False, "safety_latch": False, "paused": True,
                  "reason": EVIL},
        "idempotency": {"pending": 0, "unknown": 0, "failed": 1},
        "positions": [], "open_orders": [], "balances": [
            {"asset": "TRY", "free": "99000.5", "locked": "0"}],
        "pnl": [{"symbol": "BTCTRY", "position": "0.001", "avg_cost": "3600000",
                 "realized": "1.5", "unrealized": "-0.25", "fees": "0.75"},
                {"symbol": "ETHTRY", "position": "0", "avg_cost": "0",
                 "realized": "0.10000000", "unrealized": "0E-8", "fees": "0.1"}],
    }
    doc["bus_health"] = bus_health_report()
    doc.update(extra)
    return doc


def bus_health_report() -> dict[str, Any]:
    """A real report of the supervisor's computation (bus/health.py), with markup in a
    publisher's name and a hop over its bound."""
    h = BusHealth("supervisor", started_mono_ns=0)
    t = 0
    for seq in range(1, 11):
        t += 100_000_000
        h.observe("md.book.X", pkt(book("BTCTRY", "1", "2", recv_mono_ns=t - 3_000_000),
                                   t - 1_000_000, source=EVIL, seq=seq), t)
    return h.report(t, {"marketdata": 1.0, "bus→supervisor": 250.0},
                    {"risk": {"bus_received": 9, "bus_gaps": 0, "bus_lost": 0,
                              "bus_malformed": 0}})


def test_model_feeds_the_shared_hop_matcher_into_the_histograms() -> None:
    seen: list[tuple[str, float]] = []
    model = BusModel(on_hop=lambda h, s: seen.append((h, s)))
    ms = 1_000_000
    intent = Intent(intent_id="i-c1", symbol="BTCTRY", side="buy", order_type="limit",
                    price=Decimal(100), quantity=Decimal(2), reason="entry", ttl_s=1.0,
                    strategy="s", created_wall_ns=1, book_mono_ns=1 * ms)
    model.apply("intent.BTCTRY", pkt(intent, 2 * ms), 2 * ms)
    model.apply("order.BTCTRY", pkt(order_event("c1", "PENDING"), 3 * ms), 3 * ms)
    model.apply("order.BTCTRY", pkt(order_event("c1", "OPEN"), 9 * ms), 9 * ms)
    hops = [(h, round(s, 6)) for h, s in seen if h != "bus→dashboard"]
    assert hops == [("book→intent", 0.001), ("intent→order", 0.001),
                    ("executor→exchange", 0.006)]
    assert [h for h, _ in seen].count("bus→dashboard") == 3


def book(symbol: str, bid: str, ask: str, recv_mono_ns: int | None = None) -> BookSnapshot:
    now = time.time_ns()
    return BookSnapshot(symbol=symbol, bids=[(Decimal(bid), Decimal(1))],
                        asks=[(Decimal(ask), Decimal(1))], source="ws",
                        exchange_ts_ms=now // 1_000_000 - 3, recv_wall_ns=now,
                        recv_mono_ns=recv_mono_ns or time.monotonic_ns(), age_ms=3)


def order_event(coid: str, state: str, filled: str = "0") -> OrderEvent:
    return OrderEvent(client_order_id=coid, intent_id="i-" + coid, symbol="BTCTRY", side="buy",
                      state=state, price=Decimal("100"), quantity=Decimal("2"),  # type: ignore[arg-type]
                      filled_quantity=Decimal(filled))


def test_model_keeps_bounded_tables_and_order_history() -> None:
    clock = iter(range(1000, 100_000)).__next__
    model = BusModel(points=10, rows=3, wall=lambda: float(clock()))
    for i in range(5):
        model.apply("order.BTCTRY", pkt(order_event(f"c{i}", "SUBMITTED"), 1), 2)
    assert list(model.orders) == ["c2", "c3", "c4"]  # the oldest went first
    model.apply("order.BTCTRY", pkt(order_event("c4", "FILLED", "2"), 1), 2)
    row = model.orders["c4"]
    assert row.state == "FILLED" and row.filled == Decimal(2)
    assert [h[1] for h in row.history] == ["SUBMITTED", "FILLED"]
    for i in range(30):
        model.apply("md.book.BTCTRY", pkt(book("BTCTRY", str(100 + i), str(101 + i)), 1), 2)
    assert len(model.mids["BTCTRY"].v) == 10  # bounded series
    assert model.books["BTCTRY"].bid == Decimal(129)
    assert model.messages["md.book"] == 30 and model.messages["order"] == 6
    assert family("md.book.X") == "md.book" and family("hb.risk") == "hb"


def test_order_detail_tells_the_orders_story() -> None:
    model = BusModel()
    intent = Intent(intent_id="i-c1", symbol="BTCTRY", side="buy", order_type="limit",
                    price=Decimal(100), quantity=Decimal(2), reason="entry", ttl_s=1.0,
                    strategy="s", created_wall_ns=1)
    model.apply("intent.BTCTRY", pkt(intent, 1_000), 2_000)
    decision = RiskDecision(intent_id="i-c1", symbol="BTCTRY", verdict="approved",
                            reasons=["ok"], side="buy", order_type="limit",
                            price=Decimal(100), quantity=Decimal(2),
                            requested_quantity=Decimal(2))
    model.apply("decision.BTCTRY", pkt(decision, 2_000), 3_000)
    model.apply("order.BTCTRY", pkt(order_event("c1", "OPEN"), 3_000), 4_000)
    fill = Fill(trade_id="t1", exchange_order_id=5, client_order_id="c1", symbol="BTCTRY",
                side="buy", price=Decimal(100), quantity=Decimal(2), fee=Decimal("0.2"),
                fee_asset="TRY", ts_ms=1)
    model.apply("fill.BTCTRY", pkt(fill, 4_000), 5_000)
    cards = {c["id"]: c for c in order_detail("c1", model)}
    events = [r[1] for r in cards["timeline"]["rows"]]
    assert cards["links"]["rows"][0][0] == {"t": "why c1", "href": "/why/c1"}
    assert {"intent", "decision", "order OPEN", "fill"} <= set(events)
    assert order_detail("nope", model)[0]["state"] == "not seen"


def test_total_pnl_prefers_the_supervisors_total_and_adds_rows_otherwise() -> None:
    doc = status_doc()
    total = total_pnl(doc)
    assert total is not None
    assert total["net"] == Decimal("1.6") - Decimal("0.25") - Decimal("0.85")
    doc["pnl_total"] = {"realized": "1", "unrealized": "2", "fees": "0.5", "net": "2.5"}
    assert total_pnl(doc) == {"realized": 1, "unrealized": 2, "fees": Decimal("0.5"),
                              "net": Decimal("2.5")}
    assert total_pnl({"pnl": []}) is None


def test_dec_prints_plain_digits() -> None:
    assert dec("0E-8") == "0"
    assert dec("0.10000000") == "0.10000000"
    assert dec(Decimal("1E+2")) == "100"
    assert dec(None) == "-"


def test_reasons_in_words() -> None:
    assert "paused" in reason_in_words("gate:paused")
    assert "stale for BTCTRY" in reason_in_words("market_data:stale BTCTRY")
    assert reason_in_words("actor:risk:BACKOFF") == "Actor risk is BACKOFF, not ready."
    assert reason_in_words("something:new") == "something:new"
    assert "exchange unreachable" in reason_in_words(
        "executor:halted (exchange unreachable)")


def test_exchange_card_shows_the_executors_halt() -> None:
    watch = StatusWatch()
    doc = status_doc()
    doc["latch"]["executor_halt"] = "exchange unreachable: 503"
    watch.update(doc)
    view = build("overview", watch, BusModel(), {}, time.monotonic())
    items = {i["k"]: i for i in next(c for c in view["cards"] if c["id"] == "exchange")["items"]}
    assert items["submits"]["v"] == "HALTED: exchange unreachable: 503"
    assert items["submits"]["c"] == "bad"


def evil_model() -> BusModel:
    model = BusModel()
    model.apply("md.book.X", pkt(book(EVIL, "1", "2"), 1), 2)
    intent = Intent(intent_id=EVIL, symbol=EVIL, side="buy", order_type="limit",
                    price=Decimal(1), quantity=Decimal(1), reason=EVIL, ttl_s=1.0,
                    strategy=EVIL, created_wall_ns=1)
    model.apply("intent.X", pkt(intent, 1), 2)
    model.apply("order.X", pkt(OrderEvent(
        client_order_id=EVIL, intent_id=EVIL, symbol=EVIL, side="sell", state="OPEN",
        price=Decimal(1), quantity=Decimal(1), filled_quantity=Decimal(0), reason=EVIL), 1), 2)
    return model


@pytest.mark.parametrize("page", sorted(PAGE_NAMES))
def test_no_page_lets_bus_text_become_markup(page: str) -> None:
    watch = StatusWatch()
    watch.update(status_doc())
    view = build(page, watch, evil_model(), {"max_daily_loss_try": "500"}, time.monotonic())
    html = _env().get_template("page.html").render(
        pages=[("overview", "Overview")], page=page, title="t", view=view, token="tok")
    assert "<script>window" not in html
    assert "<img src=x" not in html
    script_blocks = html.count("<script")
    assert script_blocks == 3  # the initial view (JSON) and the two of ours, nothing else
    if page in ("markets", "decisions", "orders"):
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    json_view = html.split('<script id="initial-view" type="application/json">')[1]
    json_text = json_view.split("</script>")[0]
    assert json.loads(json_text)["page"] == page


def test_overview_shows_reasons_latches_and_the_budget() -> None:
    watch = StatusWatch()
    watch.update(status_doc())
    view = build("overview", watch, BusModel(), {}, time.monotonic())
    cards = {c["id"]: c for c in view["cards"]}
    assert cards["state"]["state"] == "HALTED"
    assert any("paused by an operator" in line for line in cards["state"]["lines"])
    paused = next(r for r in cards["latches"]["rows"] if r[0] == "paused")
    assert paused[1] == {"t": "SET", "c": "bad"} and "seen by the dashboard" in paused[2]
    pnl = {i["k"]: i["v"] for i in cards["pnl"]["items"]}
    assert pnl["daily-loss budget left"] == "487.5 of 500"
    assert Decimal(pnl["net PnL (TRY)"]) == Decimal("0.5")
    assert view["header"]["state"] == "HALTED"


def test_bus_page_shows_the_supervisors_bus_health_as_status_has_it() -> None:
    watch = StatusWatch()
    doc = status_doc()
    watch.update(doc)
    view = build("bus", watch, BusModel(), {}, time.monotonic())
    cards = {c["id"]: c for c in view["cards"]}
    rows = {r[0]: r for r in cards["hops"]["rows"]}
    md = next(h for h in doc["bus_health"]["hops"] if h["hop"] == "marketdata")
    assert rows["marketdata"][1:4] == [f"{md['1m']['per_s']:.1f}", f"{md['1m']['p50_ms']:.3f}",
                                       f"{md['1m']['p99_ms']:.3f}"]
    assert md["1m"]["p50_ms"] == 2.0
    assert rows["marketdata"][8] == {"t": "OVER BOUND", "c": "bad"}
    assert rows["bus→supervisor"][8] == {"t": "ok", "c": "good"}
    actors = {r[0]: r for r in cards["busactors"]["rows"]}
    assert actors[EVIL][1] == "10.0" and actors["risk"][7] == "9"
    info = {i["k"]: i["v"] for i in cards["businfo"]["items"]}
    assert info["slow hop"].startswith("marketdata p99 2.000 ms > 1 ms")
    assert "not exposed" in info["queue depth"]
    empty = StatusWatch()
    empty.update(status_doc(bus_health=None))
    view = build("bus", empty, BusModel(), {}, time.monotonic())
    assert {c["id"]: c for c in view["cards"]}["hops"]["rows"] == []


def test_header_says_unknown_when_the_supervisor_stops_answering() -> None:
    watch = StatusWatch()
    watch.update(status_doc(trading={"state": "TRADING", "reasons": []}))
    for _ in range(3):
        watch.update(None)
    view = build("actors", watch, BusModel(), {}, time.monotonic())
    assert view["header"]["state"] == "UNKNOWN"  # never a stale TRADING


def test_confirm_tokens_are_single_use_bound_and_expire() -> None:
    now = [0.0]
    tokens = ConfirmTokens(clock=lambda: now[0])
    t = tokens.issue("pause")
    assert tokens.redeem("", "pause") is not None
    assert "issued for pause" in (tokens.redeem(t, "kill_switch_off") or "")
    t = tokens.issue("pause")
    assert tokens.redeem(t, "pause") is None
    assert tokens.redeem(t, "pause") is not None  # used up
    t = tokens.issue("resume")
    now[0] += 1000
    assert tokens.redeem(t, "resume") is not None  # expired
    with pytest.raises(KeyError):
        tokens.issue("shutdown")
    assert set(COMMANDS) == {"pause", "resume", "kill_switch_on", "kill_switch_off",
                             "latch_clear"}


def test_access_token_is_private_and_replaced_when_exposed(tmp_path: Path) -> None:
    path = tmp_path / "data" / "dashboard.token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token  # stable across restarts
    os.chmod(path, 0o644)
    fresh = load_or_create_token(path)
    assert fresh != token and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_audit_lines_are_json_in_a_private_file(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.record(command="pause", result="ok", reason=EVIL)
    audit.record(command="resume", result="refused")
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["command"] for x in lines] == ["pause", "resume"]
    assert lines[0]["reason"] == EVIL and lines[0]["source"] == "dashboard"
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_metrics_parse_and_carry_status_figures() -> None:
    watch, model = StatusWatch(), BusModel()
    metrics = Metrics(watch, model, lambda: {"scrapes": 3})
    model._on_hop = metrics.observe_hop
    watch.update(status_doc())
    model.apply("md.book.BTCTRY", pkt(book("BTCTRY", "1", "2"), time.monotonic_ns()),
                time.monotonic_ns())
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("btcbot_orders_total", (("outcome", "submitted"),))] == 5
    assert samples[("btcbot_risk_reasons_total", (("reason", "gate:paused"),))] == 1
    assert samples[("btcbot_latch", (("latch", "paused"),))] == 1
    assert samples[("btcbot_trading", ())] == 0
    assert samples[("btcbot_actor_restarts_total", (("actor", "risk"),))] == 2
    assert samples[("btcbot_exchange_http_responses_total",
                    (("actor", "executor"), ("code", "429")))] == 2
    assert samples[("btcbot_pnl_try", (("part", "net"), ("symbol", "total")))] == 0.5
    assert samples[("btcbot_dashboard_bus_messages_total", (("family", "md.book"),))] == 1
    assert samples[("btcbot_hop_latency_seconds_count", (("hop", "bus→dashboard"),))] == 1
    assert samples[("btcbot_bus_hop_latency_ms", (("hop", "marketdata"), ("quantile", "p50"),
                                                  ("window", "1m")))] == 2.0
    assert samples[("btcbot_bus_hop_over_bound", (("hop", "marketdata"),))] == 1
    assert samples[("btcbot_bus_publisher_gaps_total", (("publisher", EVIL),))] == 0


def test_equity_log_keeps_only_the_trading_day_across_restarts(tmp_path: Path) -> None:
    from actors.dashboard.equitylog import EquityLog
    from shared.tradingday import TradingDay

    day = TradingDay.named("UTC", 0)
    path = tmp_path / "equity.csv"
    midnight = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC
    log = EquityLog(path, day, interval_s=30)
    log.load(midnight - 100)
    log.add(midnight - 90, 1.0)
    log.add(midnight - 80, 2.0)  # within the interval: not kept
    log.add(midnight - 30, 3.0)
    assert [v for _, v in log.points] == [1.0, 3.0]
    log.add(midnight + 5, 4.0)  # a new day starts a new curve
    assert [v for _, v in log.points] == [4.0]
    with path.open("a") as fh:
        fh.write("garbage\n12")  # a torn tail after a crash
    again = EquityLog(path, day)
    again.load(midnight + 60)
    assert [v for _, v in again.points] == [4.0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().count("\n") == 1  # rewritten: only today's point


def test_grafana_dashboard_queries_only_metrics_we_export() -> None:
    import re

    from tests.helpers import REPO

    watch, model = StatusWatch(), BusModel()
    metrics = Metrics(watch, model, lambda: {"scrapes": 1})
    watch.update(status_doc(trading={"state": "HALTED", "reasons": ["gate:paused"]}))
    model.apply("md.book.BTCTRY", pkt(book("BTCTRY", "1", "2"), 1), 2)
    exported = {s.name for f in text_string_to_metric_families(metrics.render().decode())
                for s in f.samples}
    board = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    queried = {name for panel in board["panels"] for target in panel["targets"]
               for name in re.findall(r"btcbot_[a-z_]+", target["expr"])}
    assert queried and queried <= exported, queried - exported


def test_latch_set_time_is_the_executors_when_status_has_it() -> None:
    watch = StatusWatch(wall=lambda: 2_000_000_000.0)
    doc = status_doc()
    doc["latch"]["set_at"] = {"paused": 1_700_000_000.0}
    watch.update(doc)
    view = build("overview", watch, BusModel(), {}, time.monotonic())
    latches = next(c for c in view["cards"] if c["id"] == "latches")
    paused = next(r for r in latches["rows"] if r[0] == "paused")
    assert paused[2] == "2023-11-14 22:13:20"  # the executor's time, with its date
