"""WebSocket: frame parsing (reference samples), live feed, reconnect after drop and stall."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from aiohttp import web

from shared.btcturk import BtcTurkClient, UserTrade
from shared.btcturk.ws import (
    BtcTurkWebSocket,
    OrderBookDiff,
    OrderBookSnapshot,
    OrderDelete,
    OrderInsert,
    OrderMatch,
    TickerEvent,
    TradeEvent,
    WsConnected,
    WsDisconnected,
    parse_frame,
)

try:
    from tests.sim_fixtures import SimProcess, sim, sim_process  # noqa: F401
except ImportError:
    from sim_fixtures import SimProcess, sim, sim_process  # type: ignore[no-redef]  # noqa: F401

# ------------------------------------------------------------------ parsing (reference samples)


def test_parse_431_snapshot() -> None:
    frame = (
        '[431,{"CS":461280,"PS":"BTCTRY","AO":[{"A":"0.01699937","P":"5171945"}],'
        '"BO":[{"A":"1.5","P":"5170000"}],"channel":"orderbook","event":"BTCTRY","type":431}]'
    )
    (ev,) = parse_frame(frame) or []
    assert isinstance(ev, OrderBookSnapshot)
    assert ev.change_set == 461280 and ev.pair == "BTCTRY"
    assert ev.asks[0].price == Decimal("5171945") and ev.bids[0].amount == Decimal("1.5")


def test_parse_432_diff() -> None:
    frame = '[432,{"CS":2,"PS":"BTCTRY","AO":[{"A":"1","P":"2","CP":3}],"BO":[],"type":432}]'
    (ev,) = parse_frame(frame) or []
    assert isinstance(ev, OrderBookDiff) and ev.asks[0].change == 3


def test_parse_trades_and_ticker() -> None:
    t422 = (
        '[422,{"D":"1651204593830","I":"100163785789620825","A":"0.0008777700",'
        '"P":"586950.0000000000","PS":"BTCTRY","S":1,"channel":"trade","event":"BTCTRY",'
        '"type":422}]'
    )
    (ev,) = parse_frame(t422) or []
    assert isinstance(ev, TradeEvent) and ev.side == "sell" and ev.timestamp_ms == 1651204593830
    t421 = (
        '[421,{"symbol":"BTCTRY","items":[{"D":"1651204111661","I":"1","A":"0.1","P":"5","S":0}],'
        '"channel":"trade","event":"BTCTRY","type":421}]'
    )
    (snap,) = parse_frame(t421) or []
    assert isinstance(snap, TradeEvent) and snap.snapshot and snap.pair == "BTCTRY"
    t402 = '[402,{"PS":"BTCTRY","B":"1","A":"2","LA":"1.5","DP":"0.1","type":402}]'
    (tick,) = parse_frame(t402) or []
    assert isinstance(tick, TickerEvent) and tick.ask == Decimal(2)


def test_parse_private_events() -> None:
    t423 = (
        '[423,{"id":1149163839863900657,"orderId":25327923517,"timestamp":1729396570700,'
        '"numeratorSymbol":"APE","denominatorSymbol":"USDT","amount":"-205.24",'
        '"fee":"-0.10467240","tax":"-0.02093448","price":"1.020","orderType":"sell",'
        '"orderClientId":"xxxxxx","preciseAmount":-205.24}]'
    )
    (fill,) = parse_frame(t423) or []
    assert isinstance(fill, UserTrade)
    assert fill.amount == Decimal("205.24") and fill.fee == Decimal("0.10467240")
    assert fill.side == "sell" and fill.pair == "APEUSDT"
    t441 = (
        '[441,{"type":441,"id":7,"user":1,"isBid":false,"method":0,"pair":62,'
        '"symbol":"DOTUSDT","amount":"0.6393864025","price":"20.9700000000","clientId":"c"}]'
    )
    (match,) = parse_frame(t441) or []
    assert isinstance(match, OrderMatch) and match.side == "sell" and match.client_order_id == "c"
    t451 = (
        '[451,{"type":451,"pairId":62,"symbol":"DOTUSDT","id":7968322274,"method":0,'
        '"userId":343234,"orderType":1,"price":"20.97","amount":"1","numLeft":"1",'
        '"denomLeft":"20.96","newOrderClientId":"e367"}]'
    )
    (ins,) = parse_frame(t451) or []
    assert isinstance(ins, OrderInsert) and not isinstance(ins, OrderDelete)
    assert ins.side == "sell" and ins.method == "limit"
    (dele,) = parse_frame(t451.replace("451", "452")) or []
    assert isinstance(dele, OrderDelete) and not isinstance(dele, OrderInsert)


def test_control_frames_are_not_events() -> None:
    assert parse_frame('[991,{"type":991,"current":"6.0.0","min":"2.3.0"}]') is None
    assert parse_frame('[100,{"type":100,"ok":true,"message":"join|trade:BTCTRY"}]') is None


@pytest.mark.parametrize(
    "frame",
    ["not json", '{"type":431}', "[431]", '[431,{"PS":"X","AO":[{"P":"x","A":"1"}]}]', "[]"],
)
def test_malformed_frames_raise(frame: str) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        parse_frame(frame)


# ------------------------------------------------------------------ live feed helpers


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


async def wait_until(pred: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_live_feed_public_and_private(sim: SimProcess) -> None:
    rec = Recorder()

    async def go() -> None:
        feed = BtcTurkWebSocket(
            sim.ws_url,
            subscriptions=[("orderbook", "BTCTRY"), ("trade", "BTCTRY"), ("ticker", "ETHTRY")],
            on_event=rec,
            api_key=sim.api_key,
            api_secret=sim.api_secret,
            stall_timeout_s=2.0,
        )
        task = asyncio.create_task(feed.run())
        await wait_until(lambda: feed.logged_in and len(rec.of(OrderBookSnapshot)) >= 2)
        assert feed.connected and isinstance(rec.events[0], WsConnected)
        await wait_until(lambda: bool(rec.of(TickerEvent)))
        book = rec.of(OrderBookSnapshot)[-1]
        async with BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret) as c:
            await c.submit_order(
                "BTCTRY", "buy", "limit", Decimal("0.0005"), book.asks[0].price + 5000, "ws-1"
            )
        await wait_until(lambda: bool(rec.of(UserTrade)) and bool(rec.of(OrderMatch)))
        assert rec.of(OrderInsert)[0].client_order_id == "ws-1"
        assert rec.of(OrderMatch)[0].client_order_id == "ws-1"
        await wait_until(lambda: any(not t.snapshot for t in rec.of(TradeEvent)))
        feed.stop()
        await asyncio.wait_for(task, 5)
        assert feed.counters["malformed"] == 0 and feed.counters["login_ok"] == 1

    asyncio.run(go())


def run_fault_scenario(sim: SimProcess, kind: str, stall_timeout_s: float) -> BtcTurkWebSocket:
    rec = Recorder()

    async def go() -> BtcTurkWebSocket:
        feed = BtcTurkWebSocket(
            sim.ws_url,
            subscriptions=[("orderbook", "ETHTRY")],
            on_event=rec,
            stall_timeout_s=stall_timeout_s,
            backoff_initial_s=0.05,
        )
        task = asyncio.create_task(feed.run())
        await wait_until(lambda: len(rec.of(OrderBookSnapshot)) >= 2)
        sim.add_fault(kind=kind)
        await wait_until(lambda: feed.counters["reconnects"] >= 1, limit_s=5)
        mark = len(rec.of(OrderBookSnapshot))
        # Resubscribed: fresh snapshots flow on the new connection.
        await wait_until(lambda: len(rec.of(OrderBookSnapshot)) >= mark + 2)
        assert rec.of(WsDisconnected) and len(rec.of(WsConnected)) == 2
        feed.stop()
        await asyncio.wait_for(task, 5)
        return feed

    return asyncio.run(go())


def test_reconnect_and_resubscribe_after_ws_drop(sim: SimProcess) -> None:
    feed = run_fault_scenario(sim, "ws_drop", stall_timeout_s=5.0)
    assert feed.counters["connects"] == 2 and feed.counters["stalls"] == 0


def test_stall_detected_then_reconnect(sim: SimProcess) -> None:
    started = time.monotonic()
    feed = run_fault_scenario(sim, "ws_stall", stall_timeout_s=0.6)
    assert feed.counters["stalls"] == 1 and feed.counters["reconnects"] == 1
    assert time.monotonic() - started < 10


def test_malformed_frames_are_counted_not_fatal() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("garbage{")
        await ws.send_str('[431,{"PS":"BTCTRY","AO":"nope"}]')
        await ws.send_str('[431,{"CS":1,"PS":"BTCTRY","AO":[],"BO":[{"P":"1","A":"2"}]}]')
        async for _ in ws:  # until the client goes away
            pass
        return ws

    async def go() -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        rec = Recorder()
        feed = BtcTurkWebSocket(f"ws://127.0.0.1:{port}/", subscriptions=[], on_event=rec)
        task = asyncio.create_task(feed.run())
        try:
            await wait_until(lambda: bool(rec.of(OrderBookSnapshot)))
            assert feed.counters["malformed"] == 2 and feed.counters["messages"] == 3
        finally:
            feed.stop()
            await asyncio.wait_for(task, 5)
            await runner.cleanup()

    asyncio.run(go())
