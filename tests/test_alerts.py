"""Alerts: which messages become events (pure), the bodies, the backoff, and delivery
from a running paper pipeline to a local aiohttp receiver that is down, then back."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import tomllib
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from actors.alerts.delivery import backoff_s
from actors.alerts.events import Detector, Reachability
from actors.alerts.format import body_for
from bus.messages import (
    ExecutorInfo,
    Fill,
    Heartbeat,
    KeyCounts,
    ReconcileReport,
    RiskDecision,
    StateTransition,
)
from shared.config import WebhookConfig
from tests.helpers import free_port, wait_for


def _hb(**latches: bool) -> Heartbeat:
    info = ExecutorInfo(**latches,
                        latch_reason="operator: test" if any(latches.values()) else "")
    return Heartbeat(actor="executor", pid=1, state="READY", ready=True, uptime_s=1.0,
                     counters={}, info=info)


def _kinds(d: Detector, body: object, now: float = 0.0) -> list[str]:
    return [e.kind for e in d.observe(body, now)]


def test_latch_edges_only() -> None:
    d = Detector(on_fill=False, repeat_s=60)
    assert _kinds(d, _hb(kill_switch=False, safety_latch=False, paused=False)) == []
    assert _kinds(d, _hb(kill_switch=False, safety_latch=False, paused=False)) == []
    assert _kinds(d, _hb(kill_switch=True, safety_latch=False, paused=False)) == [
        "kill_switch_on"]
    assert _kinds(d, _hb(kill_switch=True, safety_latch=False, paused=False)) == []
    assert _kinds(d, _hb(kill_switch=False, safety_latch=True, paused=False)) == [
        "kill_switch_off", "latch_set"]
    assert _kinds(d, _hb(kill_switch=False, safety_latch=False, paused=False)) == [
        "latch_cleared"]
    # a latch already set when the alerts actor starts is announced once
    fresh = Detector(on_fill=False, repeat_s=60)
    events = fresh.observe(_hb(kill_switch=False, safety_latch=True, paused=False), 0)
    assert [e.kind for e in events] == ["latch_set"] and "operator: test" in events[0].summary


def test_gave_up_exchange_drift_daily_loss_fill() -> None:
    d = Detector(on_fill=False, repeat_s=60)
    gave_up = StateTransition(actor="executor", from_state="BACKOFF", to_state="GAVE_UP",
                              trigger="executor restarted 5 times in 60s")
    assert _kinds(d, gave_up) == ["actor_gave_up"]
    down = StateTransition(actor="executor", from_state="READY", to_state="DEGRADED",
                           trigger="exchange unreachable: connection refused")
    assert _kinds(d, down) == ["exchange_unreachable"]
    assert _kinds(d, down) == []
    other = StateTransition(actor="marketdata", from_state="READY", to_state="DEGRADED",
                            trigger="feed stale")
    assert _kinds(d, other) == []
    up = StateTransition(actor="executor", from_state="DEGRADED", to_state="READY",
                         trigger="exchange back")
    assert _kinds(d, up) == ["exchange_reachable"]

    report = ReconcileReport(ok=True, keys=KeyCounts(), drift_found=2, drift_fixed=0,
                             failures={}, pnl=[], details=["TRY 1.5 off"])
    assert _kinds(d, report, 0) == ["drift"]
    assert _kinds(d, report, 30) == []  # still drifting: at most every repeat_s
    assert _kinds(d, report, 61) == ["drift"]
    loss = RiskDecision(intent_id="i", symbol="BTCTRY", verdict="rejected",
                        reasons=["limit:daily_loss"], side="buy", order_type="limit",
                        price=Decimal(1), quantity=Decimal(0), requested_quantity=Decimal(1))
    assert _kinds(d, loss, 0) == ["daily_loss_limit"]
    fill = Fill(trade_id="t", exchange_order_id=1, client_order_id="c", symbol="BTCTRY",
                side="buy", price=Decimal(1), quantity=Decimal(1), fee=Decimal(0),
                fee_asset="TRY", ts_ms=0)
    assert _kinds(d, fill) == []
    assert _kinds(Detector(on_fill=True, repeat_s=60), fill) == ["fill"]


def test_reachability_needs_failures_in_a_row() -> None:
    r = Reachability(threshold=3)
    assert r.observe("refused", 0, "u") == [] and r.observe(None, 1, "u") == []
    assert r.observe("refused", 2, "u") == [] and r.observe("timeout", 3, "u") == []
    down = r.observe("HTTP 503", 4, "u")
    assert [e.kind for e in down] == ["exchange_unreachable"] and "HTTP 503" in down[0].summary
    assert r.observe("HTTP 503", 5, "u") == []
    assert [e.kind for e in r.observe(None, 6, "u")] == ["exchange_reachable"]
    assert r.observe(None, 7, "u") == []


def test_bodies_and_backoff() -> None:
    d = Detector(on_fill=False, repeat_s=60)
    d.observe(_hb(kill_switch=False), 0)
    event = d.observe(_hb(kill_switch=True), 1.7e9)[0]
    plain = json.loads(body_for(WebhookConfig(url="http://x/"), event, "paper"))
    assert plain["event"] == "kill_switch_on" and plain["severity"] == "critical"
    assert plain["mode"] == "paper" and plain["at"].endswith("Z")
    tg = json.loads(body_for(WebhookConfig(url="http://x/", format="telegram", chat_id="42"),
                             event, "live"))
    assert tg["chat_id"] == "42" and "kill_switch_on" in tg["text"] and "(live)" in tg["text"]
    rng = random.Random(1)
    delays = [backoff_s(n, 0.5, 10.0, rng) for n in range(1, 10)]
    assert 0.4 <= delays[0] <= 0.6 and all(x <= 12.0 for x in delays)
    assert delays[4] > delays[0]


class Receiver:
    """A local webhook receiver in its own thread; ``start``/``stop`` at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.got.append((request.path, msgspec.json.decode(await request.read())))
        return web.json_response({"ok": True})

    def start(self) -> None:
        async def go() -> None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def close(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_webhook_delivery_with_the_receiver_down_then_back(make_pipeline) -> None:
    port = free_port()
    p = make_pipeline({"alerts": {
        "webhooks": [{"url": f"http://127.0.0.1:{port}/hook"},
                     {"url": f"http://127.0.0.1:{port}/bot123:ABC/sendMessage",
                      "format": "telegram", "chat_id": "777"}],
        "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "max_attempts": 100,
        "exchange_probe_s": 0.2, "exchange_probe_failures": 2}})
    p.start()
    names = [a["name"] for a in p.status()["actors"]]
    assert "alerts" in names
    receiver = Receiver(port)
    try:
        assert p.cli("kill-switch", "on", "--reason", "alert-test").returncode == 0
        doc = wait_for(lambda: (d := p.status())["alerts"]["failed_attempts"] >= 2 and d,
                       timeout=30, what="failed deliveries counted while the receiver is down")
        assert doc["alerts"]["sent"] == 0 and doc["alerts"]["pending"] >= 1
        assert doc["alerts"]["last_error"]
        assert "alerts: sent=0" in p.cli("status").stdout
        assert doc["trading"]["state"] == "HALTED"  # the kill switch, not the alerts

        receiver.start()
        wait_for(lambda: len(receiver.got) >= 2, timeout=30, what="delivery once back up")
        by_path = dict(receiver.got)
        plain = by_path["/hook"]
        assert plain["event"] == "kill_switch_on" and "alert-test" in plain["summary"]
        tg = by_path["/bot123:ABC/sendMessage"]
        assert tg["chat_id"] == "777" and "kill_switch_on" in tg["text"]
        wait_for(lambda: p.status()["alerts"]["sent"] >= 2, timeout=10, what="sent counted")

        assert p.cli("kill-switch", "off").returncode == 0
        wait_for(lambda: any(b.get("event") == "kill_switch_off" for _, b in receiver.got),
                 timeout=20, what="kill_switch_off delivered")
        # the exchange answers 500 for a moment (shorter than the supervisor's own
        # heartbeat timeout for the simulator): unreachable, then reachable again
        sim = f"http://127.0.0.1:{p_port(p)}"
        req = urllib.request.Request(f"{sim}/sim/faults", method="POST", data=json.dumps(
            {"kind": "http_500", "path": "/api/v2/server/time", "duration_s": 1.5}).encode())
        urllib.request.urlopen(req, timeout=5).read()
        wait_for(lambda: any(b.get("event") == "exchange_reachable" for _, b in receiver.got),
                 timeout=30, what="exchange unreachable, then reachable, delivered")
        events = [b.get("event") for path, b in receiver.got if path == "/hook"]
        assert events.index("exchange_unreachable") < events.index("exchange_reachable")

        # nothing about the webhook ever holds trading back
        wait_for(lambda: p.status()["trading"]["state"] == "TRADING", timeout=30,
                 what="TRADING again")
    finally:
        receiver.close()


def test_alerts_given_up_never_stops_trading(make_pipeline) -> None:
    """An alerts actor that cannot start is given up on without the kill switch, and
    the bot trades on; status says so."""
    p = make_pipeline({"alerts": {"webhooks": [{"url": f"http://127.0.0.1:{free_port()}/"}]},
                       "supervisor": {"intensity_max_restarts": 2, "intensity_window_s": 60.0}},
                      env={"BTCBOT_TEST_FAIL_AT_START": "alerts"})
    r = p.cli("start", "--detach")
    assert r.returncode == 1 and "gave up on alerts" in r.stderr, r.stderr
    assert "trading not stopped" in r.stderr
    doc = wait_for(lambda: (d := p.status())["trading"]["state"] == "TRADING" and d,
                   timeout=60, what="TRADING with alerts given up")
    assert "observer:alerts:GAVE_UP" in doc["trading"]["reasons"]
    assert doc["latch"]["kill_switch"] is False
    assert doc["alerts"]["running"] is False


def test_alerts_config_errors_name_the_field(tmp_path) -> None:
    import pytest

    from shared.config import ConfigError, load_config

    def load(alerts: str) -> None:
        path = tmp_path / "c.toml"
        path.write_text(alerts)
        load_config(path)

    with pytest.raises(ConfigError, match=r"alerts.webhooks\[0\].url"):
        load('[[alerts.webhooks]]\nurl = "ftp://x"\n')
    with pytest.raises(ConfigError, match=r"alerts.webhooks\[0\].chat_id"):
        load('[[alerts.webhooks]]\nurl = "https://x/"\nformat = "telegram"\n')
    with pytest.raises(ConfigError, match="alerts.max_attempts"):
        load('[alerts]\nmax_attempts = 0\n')
    with pytest.raises(ConfigError, match="format"):
        load('[[alerts.webhooks]]\nurl = "https://x/"\nformat = "slack"\n')
    path = tmp_path / "ok.toml"
    path.write_text('[[alerts.webhooks]]\nurl = "https://x/"\n')
    assert "alerts" in load_config(path).enabled_actors()
    path.write_text("")
    assert "alerts" not in load_config(path).enabled_actors()


def p_port(p: object) -> int:
    config: Path = p.config  # type: ignore[attr-defined]
    return int(tomllib.loads(config.read_text())["simulator"]["port"])


def test_executor_halt_changes() -> None:
    d = Detector(on_fill=False, repeat_s=60)

    def hb(halt: str) -> Heartbeat:
        return Heartbeat(actor="executor", pid=1, state="READY", ready=True, uptime_s=1.0,
                         counters={}, info=ExecutorInfo(halt=halt))

    assert _kinds(d, hb("")) == []
    down = d.observe(hb("exchange: connection refused"), 1)
    assert [e.kind for e in down] == ["exchange_unreachable"]
    assert "connection refused" in down[0].summary
    assert _kinds(d, hb("exchange: connection refused")) == []
    assert _kinds(d, hb("")) == ["exchange_reachable"]
    assert _kinds(d, hb("disk: DB write failed")) == ["trading_halted"]
    assert _kinds(d, hb("")) == ["trading_resumed"]
    # already halted when alerts starts: said once
    assert _kinds(Detector(on_fill=False, repeat_s=60), hb("disk: full")) == ["trading_halted"]
