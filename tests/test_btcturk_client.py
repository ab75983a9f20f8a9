"""BtcTurkClient against the simulator subprocess: every endpoint and every fault class."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from shared.btcturk import (
    AmbiguousError,
    BadResponseError,
    BtcTurkClient,
    RejectedError,
    RetryableError,
)

try:
    from tests.sim_fixtures import SimProcess, sim, sim_process  # noqa: F401
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from sim_fixtures import SimProcess, sim, sim_process  # type: ignore[no-redef]  # noqa: F401

T = TypeVar("T")


def with_client(sim: SimProcess, fn: Callable[[BtcTurkClient], Awaitable[T]], **kw: Any) -> T:
    async def go() -> T:
        kw.setdefault("timeout_s", 2.0)
        async with BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret, **kw) as client:
            return await fn(client)

    return asyncio.run(go())


def book(sim: SimProcess) -> None:
    """A deterministic BTCTRY book and a paused walk."""
    sim.set_walk(False)
    sim.set_book(
        "BTCTRY",
        bids=[["3599000", "0.5"], ["3598000", "1"]],
        asks=[["3601000", "0.01"], ["3602000", "1"]],
    )


# ------------------------------------------------------------------ public endpoints


def test_public_endpoints(sim: SimProcess) -> None:
    book(sim)

    async def go(c: BtcTurkClient) -> None:
        now = int(time.time() * 1000)
        assert abs(await c.server_time() - now) < 2000
        offset = await c.sync_time()
        assert abs(offset) < 1000
        info = await c.exchange_info()
        names = {s.name for s in info.symbols}
        assert {"BTCTRY", "ETHTRY", "SOLTRY"} <= names
        btc = info.symbol("BTC_TRY")
        assert btc.min_total == Decimal("99.91")
        assert btc.price_quantum == Decimal(1)  # hasFraction false: integer prices
        assert btc.qty_quantum == Decimal("0.00000001")
        eth = info.symbol("ETHTRY")
        assert eth.price_quantum == Decimal("0.01")
        tickers = await c.ticker()
        assert len(tickers) == len(info.symbols)
        (t,) = await c.ticker("BTCTRY")
        assert t.bid == Decimal("3599000") and t.ask == Decimal("3601000")
        assert isinstance(t.last, Decimal)
        ob = await c.order_book("BTCTRY", limit=1)
        assert ob.bids[0].price == Decimal("3599000")
        assert ob.asks[0].amount == Decimal("0.01")
        assert len(ob.bids) == 1 and ob.timestamp_ms > 0

    with_client(sim, go)


def test_case_insensitive_route_spellings(sim: SimProcess) -> None:
    async def go(c: BtcTurkClient) -> None:
        a = await c._call("GET", "/api/v2/orderBook", group="x", params={"pairSymbol": "ETH_TRY"})
        b = await c._call("GET", "/api/v2/server/exchangeInfo", group="x")
        assert b'"success":true' in a and b'"symbols"' in b

    with_client(sim, go)


# ------------------------------------------------------------------ private endpoints


def test_private_order_lifecycle(sim: SimProcess) -> None:
    book(sim)

    async def go(c: BtcTurkClient) -> None:
        before = {b.asset: b for b in await c.balances()}
        assert before["TRY"].free == Decimal("100000")
        # Crosses the 0.01 BTC best ask, the rest (0.01) rests at 3601000.
        sub = await c.submit_order(
            "BTCTRY", "buy", "limit", Decimal("0.02"), Decimal("3601000"), "cid-life-1"
        )
        assert sub.client_order_id == "cid-life-1" and sub.side == "buy"
        assert sub.price == Decimal("3601000") and sub.quantity == Decimal("0.02")
        got = await c.get_order(sub.id)
        assert got.status == "Partial" and got.filled == Decimal("0.01")
        assert got.left_amount == Decimal("0.01")
        opened = await c.open_orders("BTCTRY")
        assert [o.id for o in opened] == [sub.id]
        assert opened[0].client_order_id == "cid-life-1"
        trades = await c.user_trades("BTCTRY")
        assert len(trades) == 1 and trades[0].amount == Decimal("0.01")
        assert trades[0].fee == Decimal("32.409")  # 0.09 % taker, reported negative, abs()'d
        assert await c.user_trades("BTCTRY", skip_ids={trades[0].id}) == []
        await c.cancel_order(sub.id)
        await c.cancel_order(sub.id)  # cancelling twice is a success (since 2024-12)
        assert (await c.get_order(sub.id)).status == "Canceled"
        assert await c.open_orders() == []
        history = await c.all_orders("BTCTRY")
        assert history[0].id == sub.id
        after = {b.asset: b for b in await c.balances()}
        assert after["BTC"].free == Decimal("0.51")
        assert after["TRY"].locked == 0
        assert after["TRY"].free == Decimal("100000") - Decimal("36010") - Decimal("32.409")

    with_client(sim, go)


def test_sell_fill_trade_is_absolute(sim: SimProcess) -> None:
    book(sim)

    async def go(c: BtcTurkClient) -> None:
        await c.submit_order("BTCTRY", "sell", "limit", Decimal("0.1"), Decimal("3599000"), "s1")
        (trade,) = await c.user_trades()
        assert trade.side == "sell" and trade.amount == Decimal("0.1")
        assert trade.fee > 0

    with_client(sim, go)


def test_market_buy_quantity_is_quote(sim: SimProcess) -> None:
    book(sim)

    async def go(c: BtcTurkClient) -> None:
        sub = await c.submit_order("BTCTRY", "buy", "market", Decimal("1000"), None, "m1")
        assert sub.price == 0
        order = await c.get_order(sub.id)
        assert order.status == "Closed"
        (trade,) = await c.user_trades()
        assert trade.price * trade.amount + trade.fee <= Decimal("1000")

    with_client(sim, go)


@pytest.mark.parametrize(
    ("pair", "price", "qty", "kind", "code"),
    [
        ("BTCTRY", "3600000.5", "0.01", "price_scale", 1126),
        ("BTCTRY", "3600000", "0.000000001", "quantity_scale", 1127),
        ("BTCTRY", "3600000", "0.00001", "min_total", 1123),
        ("BTCTRY", "3600000", "5", "insufficient_balance", 1122),
        ("ETHTRY", "200000000", "1", "price_bounds", 1226),
        ("NOPETRY", "1", "1", "validation", 1000),
    ],
)
def test_validation_is_rejected(
    sim: SimProcess, pair: str, price: str, qty: str, kind: str, code: int
) -> None:
    async def go(c: BtcTurkClient) -> None:
        with pytest.raises(RejectedError) as err:
            await c.submit_order(pair, "buy", "limit", Decimal(qty), Decimal(price), "v")
        assert err.value.kind == kind and err.value.code == code
        assert err.value.http_status == 400

    with_client(sim, go)


def test_unknown_order_is_rejected(sim: SimProcess) -> None:
    async def go(c: BtcTurkClient) -> None:
        with pytest.raises(RejectedError) as err:
            await c.cancel_order(123)
        assert err.value.kind == "order_not_found"
        with pytest.raises(RejectedError) as err2:
            await c.get_order(123)
        assert err2.value.kind == "order_not_found"

    with_client(sim, go)


def test_bad_credentials_are_auth_rejections(sim: SimProcess) -> None:
    async def go() -> None:
        async with BtcTurkClient(sim.base_url, sim.api_key, "AAAA", timeout_s=2) as c:
            with pytest.raises(RejectedError) as err:
                await c.balances()
            assert err.value.kind == "auth" and err.value.http_status == 401
        async with BtcTurkClient(sim.base_url, timeout_s=2) as anon:
            with pytest.raises(RejectedError):
                await anon.balances()

    asyncio.run(go())


# ------------------------------------------------------------------ faults


def test_429_is_retryable_with_retry_after(sim: SimProcess) -> None:
    sim.add_fault(kind="http_429", path="/api/v1/order", method="POST", retry_after=7)

    async def go(c: BtcTurkClient) -> None:
        with pytest.raises(RetryableError) as err:
            await c.submit_order(
                "BTCTRY", "buy", "limit", Decimal("0.001"), Decimal("3000000"), "r1"
            )
        assert err.value.retry_after_s == 7.0 and err.value.http_status == 429

    with_client(sim, go)
    (entry,) = sim.received_orders()
    assert entry["outcome"] == "fault:http_429" and entry["order_id"] is None


def test_429_on_read_is_retried_after_retry_after(sim: SimProcess) -> None:
    sim.add_fault(kind="http_429", path="/api/v2/ticker", retry_after=0.2, count=1)

    async def go(c: BtcTurkClient) -> None:
        started = time.monotonic()
        assert await c.ticker("BTCTRY")
        assert time.monotonic() - started >= 0.2
        # every answer counted by status (heartbeats, the dashboard's metrics)
        assert c.http_statuses == {429: 1, 200: 1}

    with_client(sim, go)


def test_5xx_on_submit_is_ambiguous_and_not_retried(sim: SimProcess) -> None:
    sim.add_fault(kind="http_500", path="/api/v1/order", method="POST", count=1)

    async def go(c: BtcTurkClient) -> None:
        with pytest.raises(AmbiguousError) as err:
            await c.submit_order(
                "BTCTRY", "buy", "limit", Decimal("0.001"), Decimal("3000000"), "a1"
            )
        assert err.value.http_status == 500

    with_client(sim, go)
    assert len(sim.received_orders()) == 1  # exactly one attempt


def test_5xx_on_read_is_retried(sim: SimProcess) -> None:
    sim.add_fault(kind="http_500", path="/api/v1/users/balances", count=2)
    balances = with_client(sim, lambda c: c.balances(), retry_backoff_s=0.01)
    assert balances


def test_accept_then_drop_close_is_ambiguous_and_order_exists(sim: SimProcess) -> None:
    book(sim)
    sim.add_fault(kind="accept_then_drop", path="/api/v1/order", method="POST", mode="close")

    async def go(c: BtcTurkClient) -> None:
        with pytest.raises(AmbiguousError):
            await c.submit_order(
                "BTCTRY", "buy", "limit", Decimal("0.001"), Decimal("3000000"), "drop-1"
            )
        sim.clear_faults()
        found = [o for o in await c.open_orders() if o.client_order_id == "drop-1"]
        assert len(found) == 1

    with_client(sim, go)
    (entry,) = sim.received_orders()
    assert entry["outcome"] == "accepted_dropped" and entry["order_id"] is not None


def test_accept_then_drop_hold_times_out_ambiguous(sim: SimProcess) -> None:
    sim.add_fault(kind="accept_then_drop", path="/api/v1/order", hold_s=2)

    async def go(c: BtcTurkClient) -> None:
        started = time.monotonic()
        with pytest.raises(AmbiguousError) as err:
            await c.submit_order(
                "BTCTRY", "buy", "limit", Decimal("0.001"), Decimal("3000000"), "hold-1"
            )
        assert err.value.kind == "timeout"
        assert time.monotonic() - started < 1.5

    with_client(sim, go, timeout_s=0.5)


def test_latency_fault_delays(sim: SimProcess) -> None:
    sim.add_fault(kind="latency", path="/api/v2/server/time", latency_ms=300, count=1)

    async def go(c: BtcTurkClient) -> None:
        started = time.monotonic()
        await c.server_time()
        assert time.monotonic() - started >= 0.3

    with_client(sim, go)


def test_garbage_is_bad_response_on_read_and_ambiguous_on_submit(sim: SimProcess) -> None:
    sim.add_fault(kind="garbage", path="/api/v1")

    async def go(c: BtcTurkClient) -> None:
        with pytest.raises(BadResponseError):
            await c.balances()
        with pytest.raises(BadResponseError):
            await c.open_orders()
        with pytest.raises(AmbiguousError) as err:
            await c.submit_order(
                "BTCTRY", "buy", "limit", Decimal("0.001"), Decimal("3000000"), "g1"
            )
        assert err.value.kind == "bad_response"

    with_client(sim, go)
    (entry,) = sim.received_orders()
    assert entry["outcome"] == "accepted_garbage"


def test_probability_zero_never_fires(sim: SimProcess) -> None:
    sim.add_fault(kind="http_500", path="/api/v2", probability=0.0)
    assert with_client(sim, lambda c: c.ticker())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retryable() -> None:
    async def go() -> None:
        url = f"http://127.0.0.1:{_closed_port()}"
        async with BtcTurkClient(url, "k", "AAAA", timeout_s=1.0, retry_backoff_s=0.01) as c:
            with pytest.raises(RetryableError) as err:
                await c.submit_order("BTCTRY", "buy", "limit", Decimal("1"), Decimal("1"), "x")
            assert err.value.kind == "connect_failed"
            with pytest.raises(RetryableError):
                await c.ticker()

    asyncio.run(go())


def test_local_validation_never_sends(sim: SimProcess) -> None:
    async def go(c: BtcTurkClient) -> None:
        with pytest.raises(RejectedError):
            await c.submit_order("BTCTRY", "buy", "limit", Decimal("1"), None, "n1")
        with pytest.raises(RejectedError):
            await c.submit_order("BTCTRY", "hold", "limit", Decimal("1"), Decimal(1), "n2")  # type: ignore[arg-type]

    with_client(sim, go)
    assert sim.received_orders() == []


def test_client_rate_limiter_spaces_calls() -> None:
    async def go() -> float:
        from shared.btcturk.client import RateLimiter

        limiter = RateLimiter({"g": [(5, 0.5)]})
        started = time.monotonic()
        for _ in range(8):
            await limiter.acquire("g")
        return time.monotonic() - started

    # 5 immediate tokens, then 3 more at 10/s.
    assert asyncio.run(go()) >= 0.25
