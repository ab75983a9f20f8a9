"""The dashboard in a real browser (Playwright driving Debian's chromium) against a
real paper pipeline: every page loads without console errors and is screenshotted to
artifacts/dashboard/; the actors table follows a SIGKILL and restart; Pause (confirmed
in the dialog) halts trading and status agrees; the PnL shown is status's; forged
markup on the bus stays text; bad requests are refused; /metrics parses and moves.

One pipeline serves the whole module (a pipeline costs seconds of two cores)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from bus.auth import load_for
from bus.messages import BookSnapshot, Intent, RiskDecision
from bus.transport import Publisher
from shared.config import load_config
from tests.helpers import REPO, Pipeline, base_config, free_port, kill_all, wait_for, write_config

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "artifacts" / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGES = ("overview", "actors", "markets", "positions", "orders", "decisions", "bus")
EVIL = "<script>window.__pwned=1</script>"
EVIL_IMG = "<img src=x onerror=window.__pwned=2>"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="needs Debian's chromium (apt-get install chromium)")


class Dash:
    def __init__(self, pipeline: Pipeline, url: str) -> None:
        self.pipeline = pipeline
        self.url = url
        self.base, _, self.token = url.partition("/?token=")

    def get(self, path: str, *, token: str | None = "", method: str = "GET",
            body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, str]:
        hdrs = dict(headers or {})
        tok = self.token if token == "" else token
        if tok is not None:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    tmp = tmp_path_factory.mktemp("dash")
    doc = base_config(tmp, dashboard={"port": free_port(), "status_interval_s": 0.5},
                      reconciler={"interval_s": 2.0},
                      risk={"cooldown_s": 1.0}, strategy={"throttle_ms": 200})
    doc["actors"]["dashboard"] = {"enabled": True, "heartbeat_timeout_s": 3.0}
    pipeline = Pipeline(write_config(tmp, doc))
    try:
        pipeline.start()
        r = pipeline.cli("dashboard")
        assert r.returncode == 0, r.stderr
        yield Dash(pipeline, r.stdout.strip())
    finally:
        pipeline.stop()
        kill_all(pipeline.config, doc["simulator"]["port"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, dash: Dash) -> Iterator[Any]:
    """A fresh profile (context) logged in through the printed URL, collecting every
    console error and uncaught exception."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(dash.url)
    yield pg
    context.close()


def live_updates(pg: Any, at_least: int, timeout: float = 20.0) -> None:
    """Wait until the page applied ``at_least`` server-sent updates (the page counts
    them on <body data-updates>; reading an attribute needs no eval, which the
    dashboard's CSP forbids)."""
    wait_for(lambda: int(pg.locator("body").get_attribute("data-updates") or 0) >= at_least,
             timeout=timeout, what=f"{at_least} live updates")


def cell(pg: Any, card: str, row_key: str, col: int) -> str:
    row = pg.locator(f"#card-{card} tbody tr", has_text=row_key).first
    return str(row.locator("td").nth(col).inner_text())


def test_bad_requests_are_refused(dash: Dash) -> None:
    assert dash.get("/overview", token=None)[0] == 401
    assert dash.get("/overview", token="wrong-token-" + "x" * 30)[0] == 401
    assert dash.get("/metrics", token=None)[0] == 401
    assert dash.get("/no/such/page")[0] == 404
    assert dash.get("/nosuch")[0] == 404
    assert dash.get("/api/view/nosuch")[0] == 404
    assert dash.get("/why/" + "%3Cscript%3E")[0] == 400  # not an id: never reaches a command
    assert dash.get("/overview")[0] == 200
    csrf = {"X-Btcbot-Token": dash.token}
    # no X-Btcbot-Token header: a cross-site form cannot send a command
    assert dash.get("/api/command", method="POST", body={"command": "pause"})[0] == 401
    status, text = dash.get("/api/command", method="POST", headers=csrf,
                            body={"command": "pause"})
    assert status == 403 and "no confirm token" in text
    status, text = dash.get("/api/command", method="POST", headers=csrf,
                            body={"command": "pause", "confirm_token": "forged"})
    assert status == 403 and "unknown, used or expired" in text
    status, text = dash.get("/api/confirm", method="POST", headers=csrf,
                            body={"command": "shutdown"})
    assert status == 400
    status, text = dash.get("/api/confirm", method="POST", headers=csrf, body={"command": "resume"})
    token = json.loads(text)["confirm_token"]
    status, text = dash.get("/api/command", method="POST", headers=csrf,
                            body={"command": "pause", "confirm_token": token})
    assert status == 403 and "issued for resume" in text
    assert dash.pipeline.status()["latch"]["paused"] is False  # nothing got through
    cfg = load_config(dash.pipeline.config)
    audit = (cfg.data_path / cfg.dashboard.audit_file).read_text().splitlines()
    assert sum(json.loads(x)["result"] == "refused" for x in audit) >= 3


def test_every_page_loads_without_errors_and_is_screenshotted(page: Any, dash: Dash) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wait_for(lambda: dash.pipeline.status()["pnl"], timeout=60, what="PnL in status")
    for name in PAGES:
        page.goto(f"{dash.base}/{name}")
        live_updates(page, 2)
        assert page.locator("#live").inner_text() == "● live"
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    for name in ("overview", "orders"):
        page.goto(f"{dash.base}/{name}")
        live_updates(page, 1)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} scrolls sideways on a phone ({width}px)"
        page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
    assert page.errors == []


def test_an_order_links_to_its_history(page: Any, dash: Dash) -> None:
    page.goto(f"{dash.base}/orders")
    link = page.locator("#card-orders tbody a").first
    wait_for(lambda: link.count() > 0, timeout=60, what="an order on the bus")
    coid = link.inner_text()
    # live updates put newer orders first: click this order's link, wherever it is now
    page.locator("#card-orders tbody a", has_text=coid).first.click()
    page.wait_for_url(f"**/order/{coid}")
    assert page.locator("#card-timeline tbody tr").count() >= 2
    assert "decision" in page.locator("#card-timeline").inner_text()
    page.screenshot(path=str(ARTIFACTS / "order.png"), full_page=True)
    page.get_by_role("link", name=f"why {coid}").click()  # btcbot-supervisor why
    page.wait_for_url(f"**/why/{coid}")
    story = page.locator("#card-why pre").inner_text()
    assert coid in story and "risk" in story.lower(), story
    page.screenshot(path=str(ARTIFACTS / "why.png"), full_page=True)
    assert page.errors == []


def test_forged_markup_on_the_bus_stays_text(page: Any, dash: Dash) -> None:
    cfg = load_config(dash.pipeline.config)
    ctx = zmq.Context()
    # Compromised actors' keys (markup can only come from a roster member now): each
    # publishes what its role allows, so the forgeries get past the proxy.
    pubs = {name: Publisher(ctx, cfg.bus_pub_endpoint, name, "forger-1",
                            auth=load_for(cfg.data_path, name))
            for name in ("marketdata", "strategy", "risk")}
    try:
        time.sleep(0.5)  # slow joiner: let the proxy learn the subscriptions
        now = time.time_ns()
        for _ in range(3):
            pubs["marketdata"].publish(BookSnapshot(symbol=EVIL, bids=[(Decimal(1), Decimal(1))],
                                     asks=[(Decimal(2), Decimal(1))], source="ws",
                                     exchange_ts_ms=now // 1_000_000, recv_wall_ns=now,
                                     recv_mono_ns=time.monotonic_ns(), age_ms=0))
            pubs["strategy"].publish(Intent(intent_id="forged-1", symbol=EVIL, side="buy",
                               order_type="limit", price=Decimal(1), quantity=Decimal(1),
                               reason=EVIL_IMG, ttl_s=1.0, strategy="forger",
                               created_wall_ns=now))
            pubs["risk"].publish(RiskDecision(intent_id="forged-1", symbol=EVIL, verdict="rejected",
                                     reasons=[EVIL_IMG], side="buy", order_type="limit",
                                     price=Decimal(1), quantity=Decimal(1),
                                     requested_quantity=Decimal(1)))
            time.sleep(0.2)
    finally:
        for pub in pubs.values():
            pub.close()
        ctx.destroy(linger=0)
    for name, text in (("decisions", EVIL_IMG), ("markets", EVIL)):
        page.goto(f"{dash.base}/{name}")  # server-rendered first paint
        wait_for(lambda t=text: page.get_by_text(t).count() > 0, timeout=15,
                 what=f"the forged text shown as text on {name}")
        live_updates(page, 2)  # and the live (script-rendered) updates
        assert page.get_by_text(text).count() > 0
        assert page.evaluate("window.__pwned === undefined")
        assert page.locator("img[src=x]").count() == 0
    assert page.errors == []


def test_actors_table_follows_a_sigkill_and_restart(page: Any, dash: Dash) -> None:
    page.goto(f"{dash.base}/actors")
    live_updates(page, 1)
    before = dash.pipeline.actor("strategy")
    assert cell(page, "actors", "strategy", 2) == str(before["pid"])
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: cell(page, "actors", "strategy", 2) not in (str(before["pid"]), "-")
             and cell(page, "actors", "strategy", 1) == "READY", timeout=30,
             what="the actors table showing strategy's new pid, READY")
    after = dash.pipeline.actor("strategy")
    assert cell(page, "actors", "strategy", 2) == str(after["pid"])
    assert int(cell(page, "actors", "strategy", 3)) == after["restarts"] >= 1
    assert page.errors == []


def test_pnl_shown_is_status_pnl(page: Any, dash: Dash) -> None:
    page.goto(f"{dash.base}/positions")

    def status_net() -> Decimal:
        doc = dash.pipeline.status()
        if "pnl_total" in doc:
            return Decimal(str(doc["pnl_total"]["net"]))
        return sum((Decimal(p["realized"]) + Decimal(p["unrealized"]) - Decimal(p["fees"])
                    for p in doc["pnl"]), Decimal(0))

    def agree() -> bool:
        before = status_net()
        shown = Decimal(cell(page, "pnl", "total", 7))
        return shown in (before, status_net())  # a reconcile report may land in between

    wait_for(agree, timeout=30, what="the page's total net PnL equal to status --json's")
    assert page.errors == []


def confirm_command(page: Any, command: str) -> str:
    page.locator(f"button[data-command={command}]").click()
    dialog = page.locator("dialog#confirm")
    dialog.wait_for(state="visible")
    page.locator("#confirm-reason").fill(f"browser test {command}")
    page.locator("#confirm-ok").click()
    result = page.locator("#command-result")

    def answered() -> str | None:
        # the line reads "<command>: confirm?" while the dialog is open, then
        # "<command>: sending…", then the supervisor's answer (or FAILED: why)
        text = str(result.inner_text())
        done = text.startswith(f"{command}: ") and not text.endswith(("sending…", "confirm?"))
        return text if done else None

    return str(wait_for(answered, timeout=40, what=f"{command} answered"))


def test_pause_button_halts_trading_and_status_agrees(page: Any, dash: Dash) -> None:
    page.goto(f"{dash.base}/overview")
    live_updates(page, 1)
    # Cancel first: nothing happens
    page.locator("button[data-command=pause]").click()
    page.locator("#confirm-cancel").click()
    wait_for(lambda: "cancelled" in page.locator("#command-result").inner_text(), timeout=5)
    assert dash.pipeline.status()["latch"]["paused"] is False

    assert "paused set" in confirm_command(page, "pause")
    doc = wait_for(lambda: (d := dash.pipeline.status())["latch"]["paused"] and d, timeout=10,
                   what="status showing paused")
    assert doc["trading"]["state"] == "HALTED" and "gate:paused" in doc["trading"]["reasons"]
    wait_for(lambda: page.locator("#hdr-state").inner_text() == "HALTED", timeout=10,
             what="the page showing HALTED")
    wait_for(lambda: cell(page, "latches", "paused", 1) == "SET", timeout=10)
    # the set time is the executor's (a date and a time), not when the page first saw it
    set_at = doc["latch"]["set_at"]["paused"]
    wait_for(lambda: cell(page, "latches", "paused", 2)
             == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(set_at)), timeout=10,
             what="the latch's set time on the page")
    page.screenshot(path=str(ARTIFACTS / "overview-paused.png"), full_page=True)

    assert "paused cleared" in confirm_command(page, "resume")
    wait_for(lambda: dash.pipeline.status()["latch"]["paused"] is False, timeout=10)
    cfg = load_config(dash.pipeline.config)
    audit = [json.loads(x) for x in
             (cfg.data_path / cfg.dashboard.audit_file).read_text().splitlines()]
    done = [(a["command"], a["reason"]) for a in audit if a["result"] == "ok"]
    assert ("pause", "browser test pause") in done and ("resume", "browser test resume") in done
    assert page.errors == []


def test_metrics_parse_and_move(dash: Dash) -> None:
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = dash.get("/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    first = scrape()
    books = ("btcbot_dashboard_bus_messages_total", (("family", "md.book"),))
    for needed in (("btcbot_status_up", ()), ("btcbot_trading", ()),
                   ("btcbot_actor_ready", (("actor", "executor"),)),
                   ("btcbot_orders_total", (("outcome", "submitted"),)),
                   ("btcbot_risk_decisions_total", (("verdict", "approved"),)),
                   ("btcbot_latch", (("latch", "kill_switch"),)),
                   ("btcbot_exchange_http_responses_total", (("actor", "executor"),
                                                              ("code", "200"))), books):
        assert needed in first, needed
    assert first[("btcbot_status_up", ())] == 1
    wait_for(lambda: scrape()[books] > first[books], timeout=10, what="book counter moving")
    hb = ("btcbot_hop_latency_seconds_count", (("hop", "bus→dashboard"),))
    wait_for(lambda: scrape()[hb] > first[hb], timeout=10, what="hop histogram moving")


def test_a_port_it_cannot_bind_never_stops_trading(dash: Dash) -> None:
    """Last in the module: SIGKILL the dashboard and take its port before the restarted
    one binds it. It must stay up in ERROR_RETRYABLE saying why, trading must carry on,
    and once the port is free it serves again."""
    cfg = load_config(dash.pipeline.config)
    before = dash.pipeline.actor("dashboard")
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: _try_bind(squatter, cfg.dashboard.port), timeout=10, interval=0.01,
             what="the dashboard's port")
    try:
        squatter.listen(1)
        doc = wait_for(lambda: (d := dash.pipeline.status()) and (a := next(
            x for x in d["actors"] if x["name"] == "dashboard"))["state"] == "ERROR_RETRYABLE"
            and a["pid"] != before["pid"] and d, timeout=30, what="dashboard ERROR_RETRYABLE")
        me = next(x for x in doc["actors"] if x["name"] == "dashboard")
        assert "cannot listen" in me["info"]["bind_error"]
        assert not any("dashboard" in r for r in doc["trading"]["reasons"]), doc["trading"]
    finally:
        squatter.close()
    wait_for(lambda: dash.get("/overview")[0] == 200, timeout=30, what="serving again")
    # The supervisor hears of the recovery on the dashboard's next transition/heartbeat,
    # which may come a moment after the port serves again.
    wait_for(lambda: dash.pipeline.actor("dashboard")["state"] == "READY", timeout=10,
             what="the supervisor sees the dashboard READY")


def _try_bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True
