"""BTCTurk's documented rate limits in the simulator, and our client staying under them."""

from __future__ import annotations

import asyncio
import itertools
import time
from decimal import Decimal

import aiohttp

from exchange_sim.rate_limits import RateLimiter
from shared.btcturk import BtcTurkClient

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
