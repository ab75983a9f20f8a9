"""BTCTurk's documented rate limits in the simulator, and our client staying under them."""

from __future__ import annotations

import asyncio
import itertools
import time
from decimal import Decimal

import aiohttp
import pytest

from exchange_sim.rate_limits import RateLimiter, WsConnectLimiter
from shared.btcturk import BtcTurkClient
from shared.btcturk.ws import BtcTurkWebSocket, ConnectPacer, retry_after_s

try:
    from tests.sim_fixtures import start_sim_process
except ImportError:
    from sim_fixtures import start_sim_process  # type: ignore[no-redef]
from shared.btcturk.auth import auth_headers


def test_order_limit_is_ten_a_second_per_account_and_per_ip() -> None:
    rl = RateLimiter()
    for _ in range(10):
        assert rl.check("POST", "/api/v1/order", "1.1.1.1", "k1", 100.0) is None
    refused = rl.check("POST", "/api/v1/order", "1.1.1.1", "k1", 100.5)
    assert refused is not None and refused.retry_after_s == 1
    body = refused.body()
    assert body["message"] == "TOO_MANY_REQUESTS" and body["code"] == 429
    assert body["limit"] == "10" and body["period"] == "1s"
    # Another account from the same IP: the IP's own window is spent too.
    assert rl.check("POST", "/api/v1/order", "1.1.1.1", "k2", 100.6) is not None
    # A new window (it starts at the first request) accepts again.
    assert rl.check("POST", "/api/v1/order", "1.1.1.1", "k1", 101.0) is None
    assert rl.refused == 2


def test_minute_limits_refuse_until_the_window_ends_and_refusals_do_not_count() -> None:
    rl = RateLimiter()
    for i in range(180):
        assert rl.check("GET", "/api/v2/orderbook", "ip", "", 10.0 + i * 0.1) is None
    refused = rl.check("GET", "/api/v2/orderbook", "ip", "", 40.0)
    assert refused is not None and refused.retry_after_s == 30
    assert "Maximum allowed: 180 per 1m." in str(refused.body()["details"])
    assert rl.check("GET", "/api/v2/orderbook", "other-ip", "", 40.0) is None  # per IP
    assert rl.check("GET", "/api/v2/orderbook", "ip", "", 70.0) is None
    assert rl.check("GET", "/api/v2/ticker", "ip", "", 70.0) is None  # its own limit
    assert RateLimiter(enabled=False).check("POST", "/api/v1/order", "ip", "k", 0.0) is None


def test_graph_api_shares_six_hundred_per_ten_minutes() -> None:
    rl = RateLimiter()
    for i in range(600):
        path = "/v1/klines/history" if i % 2 else "/v1/ohlcs"
        # 300 ohlcs spread over 10 minutes stay under its own 120/min
        assert rl.check("GET", path, "ip", "", i * 0.9) is None, i
    assert rl.check("GET", "/v1/klines/history", "ip", "", 541.0) is not None


def test_simulator_answers_429_and_our_client_never_trips_it() -> None:
    sim = start_sim_process(rate_limits=True)
    try:
        async def hammer() -> list[tuple[int, str | None, dict]]:
            stamps = itertools.count(int(time.time() * 1000))
            out = []
            async with aiohttp.ClientSession() as s:
                for _ in range(12):
                    headers = auth_headers(sim.api_key, sim.api_secret, next(stamps))
                    async with s.post(sim.base_url + "/api/v1/order", headers=headers, json={
                        "pairSymbol": "BTCTRY", "orderType": "buy", "orderMethod": "limit",
                        "price": "100000", "quantity": "0.01"}) as r:
                        out.append((r.status, r.headers.get("Retry-After"), await r.json()))
            return out

        answers = asyncio.run(hammer())
        limited = [a for a in answers if a[0] == 429]
        assert limited and len(answers) - len(limited) <= 10
        status, retry_after, body = limited[0]
        assert retry_after is not None and int(retry_after) >= 1
        assert body["message"] == "TOO_MANY_REQUESTS" and body["policy"] in ("account", "ip")
        assert sim.state()["rate_limited"] == len(limited)
        time.sleep(1.1)

        async def polite() -> int:
            async with BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret) as c:
                book = await c.order_book("BTCTRY", 1)
                price = book.bids[0].price - 100_000
                await asyncio.gather(*(
                    c.submit_order("BTCTRY", "buy", "limit", Decimal("0.0001"), price, f"p{i}")
                    for i in range(25)))
                return c.rate_limited

        assert asyncio.run(polite()) == 0  # 25 orders paced under 10/s: not one 429
        accepted = [o for o in sim.received_orders() if o["outcome"] == "accepted"]
        assert len(accepted) >= 25
    finally:
        sim.stop()


# --- WebSocket connects: 15 a minute per IP, then blocked 60 s -------------------------------


def test_ws_connect_limit_blocks_the_ip_sixty_seconds_and_refusals_do_not_extend_it() -> None:
    lim = WsConnectLimiter()
    assert all(lim.check("ip", i * 0.1) is None for i in range(15))
    refusal = lim.check("ip", 2.0)  # the 16th in the minute: the block starts now
    assert refusal is not None and refusal.retry_after_s == 60 and refusal.limit.count == 15
    assert lim.check("other-ip", 2.0) is None  # per IP
    later = lim.check("ip", 32.0)
    assert later is not None and later.retry_after_s == 30  # refused: the block stays put
    assert lim.check("ip", 62.0) is None  # block over: a new minute
    assert lim.refused == 2
    assert all(WsConnectLimiter(enabled=False).check("ip", 0.0) is None for _ in range(40))


def test_connect_pacer_spaces_attempts_and_honours_retry_after() -> None:
    p = ConnectPacer(per_min=3)
    for t in (0.0, 0.5, 1.0):
        assert p.delay(t) == 0.0
        p.attempted(t)
    assert p.delay(2.0) == pytest.approx(ConnectPacer.PERIOD_S - 2.0)
    assert p.delay(ConnectPacer.PERIOD_S) == 0.0  # the first attempt left the minute
    p.refused(100.0, 60.0)
    assert p.delay(130.0) == pytest.approx(30.0)
    assert retry_after_s({"Retry-After": "55"}, 60.0) == 55.0
    assert retry_after_s({}, 60.0) == retry_after_s({"Retry-After": "x"}, 60.0) == 60.0


def test_sixteenth_ws_connect_in_a_minute_gets_429_and_our_feed_waits_it_out() -> None:
    sim = start_sim_process(rate_limits=True)
    try:
        async def raw_connects(n: int) -> list[tuple[int, str | None, dict | None]]:
            out: list[tuple[int, str | None, dict | None]] = []
            async with aiohttp.ClientSession() as s:
                for _ in range(n):
                    try:
                        async with s.ws_connect(sim.ws_url) as ws:
                            await ws.receive(timeout=2)  # the 991 greeting
                            out.append((101, None, None))
                    except aiohttp.WSServerHandshakeError as exc:
                        out.append((exc.status, (exc.headers or {}).get("Retry-After"), None))
            return out

        answers = asyncio.run(raw_connects(16))
        assert [a[0] for a in answers] == [101] * 15 + [429]
        assert 55 <= int(answers[-1][1] or 0) <= 60
        assert sim.state()["ws_connects_refused"] == 1

        async def feed_waits() -> BtcTurkWebSocket:
            feed = BtcTurkWebSocket(sim.ws_url, subscriptions=[("orderbook", "BTCTRY")],
                                    on_event=_ignore, backoff_initial_s=0.01)
            task = asyncio.create_task(feed.run())
            await asyncio.sleep(2.0)  # with no pacing it would retry ~100 times
            feed.stop()
            await asyncio.wait_for(task, 5)
            return feed

        feed = asyncio.run(feed_waits())
        assert feed.counters["connect_refused"] == 1 and feed.counters["connects"] == 0
        assert feed.counters["connect_waits"] == 1  # then held to the Retry-After
        assert sim.state()["ws_connects_refused"] == 2
    finally:
        sim.stop()


def test_our_feed_never_connects_more_than_its_share_of_the_minute() -> None:
    """A server that drops every connection at once (ws_drop): without pacing the feed
    reconnects every backoff step; with it, at most connects_per_min attempts a minute."""
    sim = start_sim_process(rate_limits=True)
    try:
        sim.add_fault(kind="ws_drop", duration_s=30)

        async def flapping() -> BtcTurkWebSocket:
            feed = BtcTurkWebSocket(sim.ws_url, subscriptions=[("orderbook", "BTCTRY")],
                                    on_event=_ignore, backoff_initial_s=0.01,
                                    backoff_max_s=0.02, connects_per_min=4)
            task = asyncio.create_task(feed.run())
            await asyncio.sleep(2.0)
            feed.stop()
            await asyncio.wait_for(task, 5)
            return feed

        feed = asyncio.run(flapping())
        assert feed.counters["connects"] == 4 and feed.counters["connect_waits"] >= 1
        assert sim.state()["ws_connects_refused"] == 0
    finally:
        sim.stop()


async def _ignore(_event: object) -> None:
    return None
