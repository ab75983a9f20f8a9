"""Simulator behaviour: authentication refusals, matching, balances, admin API, faults."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import aiohttp

from exchange_sim import SimOptions, Simulator, start_simulator
from exchange_sim.engine import OrderRequest
from exchange_sim.ws import WsClient
from shared.btcturk.auth import auth_headers

try:
    from tests.sim_fixtures import SimProcess, sim, sim_process  # noqa: F401
except ImportError:
    from sim_fixtures import SimProcess, sim, sim_process  # type: ignore[no-redef]  # noqa: F401


async def raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


def test_auth_refusals(sim: SimProcess) -> None:
    url = sim.base_url + "/api/v1/users/balances"
    now = int(time.time() * 1000)

    async def go() -> None:
        status, body = await raw_get(url)
        assert status == 401 and body["message"] == "Unauthorized - Headers are missing"
        assert body["success"] is True  # BTCTurk's documented quirk
        bad = auth_headers(sim.api_key, sim.api_secret, now)
        bad["X-Signature"] = auth_headers(sim.api_key, "AAAA", now)["X-Signature"]
        status, body = await raw_get(url, bad)
        assert status == 401 and body["message"] == "Unauthorized - Invalid Signature"
        status, body = await raw_get(url, auth_headers("nope", sim.api_secret, now))
        assert status == 401
        stale = auth_headers(sim.api_key, sim.api_secret, now - 6000)
        status, body = await raw_get(url, stale)
        assert (status, body["code"]) == (401, 1037)
        assert body["message"] == "Unauthorized - Invalid Nonce"
        good = auth_headers(sim.api_key, sim.api_secret, now)
        assert (await raw_get(url, good))[0] == 200
        assert (await raw_get(url, good))[0] == 401  # reused stamp
        older = auth_headers(sim.api_key, sim.api_secret, now - 2000)
        assert (await raw_get(url, older))[0] == 401  # older than the reorder window

    asyncio.run(go())


def test_public_routes_case_insensitive_and_pair_spelling(sim: SimProcess) -> None:
    async def go() -> None:
        for path in ("/api/v2/orderBook?pairSymbol=BTC_TRY", "/API/V2/ORDERBOOK?pairsymbol=btctry"):
            status, body = await raw_get(sim.base_url + path)
            assert status == 200 and body["success"] and len(body["data"]["bids"]) == 20
            assert body["httpStatusCode"] == 200
        status, body = await raw_get(sim.base_url + "/api/v2/server/time")
        assert status == 200 and "serverTime" in body and "success" not in body
        status, body = await raw_get(sim.base_url + "/api/v2/trades?pairSymbol=BTCTRY&last=5")
        assert status == 200 and isinstance(body["data"], list)

    asyncio.run(go())


def test_book_spread_and_depth(sim: SimProcess) -> None:
    async def go() -> None:
        for sym in ("BTCTRY", "ETHTRY", "SOLTRY", "USDTTRY"):
            _, body = await raw_get(f"{sim.base_url}/api/v2/orderbook?pairSymbol={sym}")
            bid = Decimal(body["data"]["bids"][0][0])
            ask = Decimal(body["data"]["asks"][0][0])
            assert bid < ask and (ask - bid) / bid < Decimal("0.005")

    asyncio.run(go())


def test_resting_order_partial_then_full_fill_and_balances(sim: SimProcess) -> None:
    sim.set_walk(False)
    sim.set_book("ETHTRY", bids=[["139000", "5"]], asks=[["141000", "5"]])

    async def go() -> None:
        from shared.btcturk import BtcTurkClient

        async with BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret) as c:
            sub = await c.submit_order(
                "ETHTRY", "buy", "limit", Decimal("0.5"), Decimal("140000"), "rest-1"
            )
            assert (await c.get_order(sub.id)).status == "Untouched"
            state = sim.state()
            assert Decimal(state["balances"]["TRY"]["locked"]) == Decimal("70063")  # 0.09 % reserve
            # The market walks down through our bid, with only 0.2 available at 139900.
            sim.set_book("ETHTRY", bids=[["139000", "5"]], asks=[["139900", "0.2"]])
            order = await c.get_order(sub.id)
            assert order.status == "Partial" and order.filled == Decimal("0.2")
            sim.set_book("ETHTRY", bids=[["139000", "5"]], asks=[["139950", "3"]])
            order = await c.get_order(sub.id)
            assert order.status == "Closed" and order.left_amount == 0
            trades = await c.user_trades("ETHTRY")
            assert sorted(t.amount for t in trades) == [Decimal("0.2"), Decimal("0.3")]
            assert all(t.price == Decimal("140000") for t in trades)  # maker gets its price
            assert sum(t.fee for t in trades) == Decimal("35")  # 0.05 % maker on 70000
        state = sim.state()
        assert Decimal(state["balances"]["ETH"]["free"]) == Decimal("5.5")
        assert Decimal(state["balances"]["TRY"]["locked"]) == 0
        assert Decimal(state["balances"]["TRY"]["free"]) == Decimal("100000") - 70000 - 35
        assert all(f["maker"] for f in state["fills"])
        assert state["open_orders"] == []

    asyncio.run(go())


def test_price_time_priority_between_resting_orders() -> None:
    sim = Simulator(SimOptions(seed=2, random_walk=False))
    m, e = sim.market, sim.engine
    now = sim.now_ms()
    m.set_book(
        "SOLTRY",
        bids=[[Decimal("7000"), Decimal("10")]],
        asks=[[Decimal("7100"), Decimal("10")]],
        now_ms=now,
    )
    first = e.submit(OrderRequest("SOLTRY", "buy", "limit", Decimal("7050"), Decimal("1"), "a"))
    second = e.submit(OrderRequest("SOLTRY", "buy", "limit", Decimal("7050"), Decimal("1"), "b"))
    better = e.submit(OrderRequest("SOLTRY", "buy", "limit", Decimal("7060"), Decimal("1"), "c"))
    m.set_book("SOLTRY", bids=[], asks=[[Decimal("7040"), Decimal("1.5")]], now_ms=now)
    e.match_resting("SOLTRY")
    assert better.status == "Closed"  # best price first
    assert first.status == "Partial" and first.left == Decimal("0.5")  # then oldest
    assert second.status == "Untouched"


def test_random_walk_eventually_crosses_a_resting_order() -> None:
    sim = Simulator(SimOptions(seed=5))
    book = sim.market.books["USDTTRY"]
    bid = book.best_bid()
    assert bid is not None
    order = sim.engine.submit(OrderRequest("USDTTRY", "buy", "limit", bid, Decimal("1000"), "walk"))
    for _ in range(5000):
        sim.market_tick()
        if order.status == "Closed":
            break
    assert order.status in ("Partial", "Closed") and sim.engine.fills


def test_cancel_semantics(sim: SimProcess) -> None:
    async def go() -> None:
        from shared.btcturk import BtcTurkClient, RejectedError

        sim.set_walk(False)
        sim.set_book("BTCTRY", bids=[["3599000", "1"]], asks=[["3601000", "1"]])
        async with BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret) as c:
            filled = await c.submit_order(
                "BTCTRY", "buy", "limit", Decimal("0.001"), Decimal("3601000"), "f"
            )
            try:
                await c.cancel_order(filled.id)
                raise AssertionError("cancelling a Closed order must fail")
            except RejectedError as exc:
                assert exc.kind == "cannot_cancel" and exc.code == 1050

    asyncio.run(go())


def test_received_orders_log_and_no_client_id_dedup(sim: SimProcess) -> None:
    async def go() -> None:
        from shared.btcturk import BtcTurkClient

        async with BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret) as c:
            for _ in range(2):
                await c.submit_order(
                    "SOLTRY", "buy", "limit", Decimal("1"), Decimal("1000"), "same-id"
                )

    before = time.monotonic_ns()
    asyncio.run(go())
    log = sim.received_orders()
    assert [e["newOrderClientId"] for e in log] == ["same-id", "same-id"]
    assert log[0]["order_id"] != log[1]["order_id"]  # duplicates are accepted
    assert all(e["outcome"] == "accepted" for e in log)
    assert before < log[0]["received_mono_ns"] < log[1]["received_mono_ns"] < time.monotonic_ns()


def test_frozen_book_keeps_timestamp(sim: SimProcess) -> None:
    sim.add_fault(kind="frozen_book", symbols=["BTCTRY"], duration_s=5)

    async def go() -> None:
        url = sim.base_url + "/api/v2/orderbook?pairSymbol=BTCTRY"
        _, first = await raw_get(url)
        _, eth1 = await raw_get(sim.base_url + "/api/v2/orderbook?pairSymbol=ETHTRY")
        await asyncio.sleep(0.35)
        _, second = await raw_get(url)
        _, eth2 = await raw_get(sim.base_url + "/api/v2/orderbook?pairSymbol=ETHTRY")
        assert first["data"] == second["data"]
        assert eth1["data"]["timestamp"] != eth2["data"]["timestamp"]

    asyncio.run(go())


def test_bad_fault_spec_is_400(sim: SimProcess) -> None:
    async def go() -> int:
        async with (
            aiohttp.ClientSession() as s,
            s.post(sim.base_url + "/sim/faults", json={"kind": "meteor"}) as r,
        ):
            return r.status

    assert asyncio.run(go()) == 400


def test_in_process_start_and_book_events() -> None:
    async def go() -> None:
        handle = await start_simulator(
            "127.0.0.1", 0, seed=3, book_interval_ms=50, balances="TRY=500,BTC=1"
        )
        try:
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(handle.ws_url) as ws:
                    await ws.send_json(
                        [
                            151,
                            {"type": 151, "channel": "orderbook", "event": "BTCTRY", "join": True},
                        ]
                    )
                    seen = 0
                    while seen < 3:
                        msg = await asyncio.wait_for(ws.receive_json(), 2)
                        seen += msg[0] == 431
                async with s.get(handle.base_url + "/sim/book-events?symbol=BTCTRY") as r:
                    events = await r.json()
                assert len(events) >= 2
                assert events[-1]["change_set"] > events[0]["change_set"]
                async with s.get(handle.base_url + "/sim/state") as r:
                    state = await r.json()
                assert state["balances"]["TRY"]["free"] == "500"
        finally:
            await handle.close()

    asyncio.run(go())


def test_ws_frame_is_stamped_when_written_not_when_queued() -> None:
    """The latency bench's book-publish time: a frame that waits in the queue is
    stamped as it goes onto the socket; a stalled client's frames are never stamped."""

    class StubWs:
        closed = False

        def __init__(self) -> None:
            self.sent: list[tuple[str, int]] = []

        async def send_str(self, text: str) -> None:
            self.sent.append((text, time.monotonic_ns()))

    async def go() -> tuple[int, list[int], list[tuple[str, int]]]:
        ws = StubWs()
        client = WsClient(ws)  # type: ignore[arg-type]
        stamps: list[int] = []
        queued = time.monotonic_ns()
        client.send("a", lambda: stamps.append(time.monotonic_ns()))
        await asyncio.sleep(0.02)  # the frame waits while the publisher's handler goes on
        writer = asyncio.create_task(client.writer())
        await asyncio.sleep(0.01)
        client.stalled = True
        client.queue.put_nowait(("b", lambda: stamps.append(-1)))
        await asyncio.sleep(0.01)
        writer.cancel()
        return queued, stamps, ws.sent

    queued, stamps, sent = asyncio.run(go())
    assert [text for text, _ in sent] == ["a"]
    assert len(stamps) == 1
    assert stamps[0] - queued >= 20_000_000
    assert stamps[0] <= sent[0][1]


def test_health_answers_through_an_outage_of_every_api(sim: SimProcess) -> None:
    """The supervisor's probe is /health: an injected 503 on every API is the simulated
    exchange's outage, not a dead simulator to restart."""
    sim.add_fault(kind="http_500", status=503, duration_s=5)
    try:
        async def go() -> None:
            status, _ = await raw_get(sim.base_url + "/api/v2/server/time")
            assert status == 503
            status, body = await raw_get(sim.base_url + "/health")
            assert status == 200 and body == {"ok": True}

        asyncio.run(go())
    finally:
        sim.clear_faults()
