"""Units of the simulation's machinery: the virtual-time loop and the in-memory bus's
delivery semantics (what the whole-bot runs in test_simulate.py rely on)."""

from __future__ import annotations

import asyncio
import heapq
import random
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.messages import CommandRequest, Ping, PingCommand, packet_encoder
from bus.transport import RequestFailed
from shared.btcturk.http import ConnectError, ExchangeTimeout, HttpResponse
from shared.btcturk.ws import (
    BtcTurkWebSocket,
    OrderBookSnapshot,
    OrderInsert,
    TradeEvent,
    WsDisconnected,
)
from simulate.clock import VirtualClock
from simulate.exchange import InProcessExchange
from simulate.invariants import BookVersions
from simulate.membus import MemBus, MemClient, Network
from simulate.trace import Trace
from simulate.vloop import SimulationStalled, VirtualTimeLoop


def run(coro_fn):  # type: ignore[no-untyped-def]
    loop = VirtualTimeLoop()
    try:
        return loop, loop.run_until_complete(coro_fn(loop))
    finally:
        loop.close()


def test_virtual_time_jumps_to_the_next_timer() -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        seen: list[float] = []

        async def ticker(period: float, n: int) -> None:
            for _ in range(n):
                await asyncio.sleep(period)
                seen.append(loop.time())

        await asyncio.gather(ticker(1.0, 3), ticker(2.5, 1))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 10.0)
        return seen

    loop, seen = run(main)
    assert seen == [1.0, 2.0, 2.5, 3.0]
    assert loop.time() == pytest.approx(13.0)


def test_a_deadlock_and_a_livelock_are_errors_not_hangs() -> None:
    async def deadlock(loop: VirtualTimeLoop) -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationStalled, match="no timer"):
        run(deadlock)

    async def spin(loop: VirtualTimeLoop) -> None:
        while True:  # noqa: ASYNC110 - the spin under test
            await asyncio.sleep(0)

    with pytest.raises(SimulationStalled, match="livelock"):
        run(spin)


def test_a_tiny_positive_sleep_still_moves_time() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        await asyncio.sleep(3600.0)
        start = loop.time()
        for _ in range(5):
            await asyncio.sleep(1e-15)  # below the float resolution at t = 3600 s
        return loop.time() - start

    _, moved = run(main)
    assert moved > 0


def _net(loop: VirtualTimeLoop, seed: int = 1) -> Network:
    return Network(loop, random.Random(seed), Trace(loop.time))


@settings(max_examples=200, deadline=None)
@given(slots=st.lists(st.integers(0, 4), min_size=1, max_size=80),
       cancel=st.sets(st.integers(0, 79), max_size=20))
def test_timers_run_in_the_base_loops_heap_order_ties_included(
        slots: list[int], cancel: set[int]) -> None:
    """The virtual loop's heap holds (when, handle) pairs: callbacks due at the same
    time must still run in the order asyncio's own heap of TimerHandles pops them
    (that order is in every trace; FIFO, say, would move traces)."""
    loop = VirtualTimeLoop()
    ran: list[int] = []
    reference: list[asyncio.TimerHandle] = []
    handles = []
    for i, slot in enumerate(slots):
        handles.append(loop.call_at(slot * 0.5, ran.append, i))
        heapq.heappush(reference, asyncio.TimerHandle(slot * 0.5, ran.append, (i,), loop))
    for i in cancel:
        if i < len(handles):
            handles[i].cancel()
    loop.call_at(10.0, loop.stop)
    heapq.heappush(reference, asyncio.TimerHandle(10.0, ran.append, (-1,), loop))
    loop.run_forever()
    loop.close()
    popped = [heapq.heappop(reference)._args[0]  # type: ignore[attr-defined]
              for _ in range(len(reference))]
    expected = [i for i in popped if i >= 0 and i not in cancel]
    assert ran == expected


def test_a_failing_callback_reaches_the_exception_handler() -> None:
    loop = VirtualTimeLoop()
    seen: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))

    def boom() -> None:
        raise ValueError("boom")

    loop.call_soon(boom)
    loop.call_later(0.5, boom)
    loop.call_later(1.0, loop.stop)
    loop.run_forever()
    loop.close()
    assert [type(c["exception"]) for c in seen] == [ValueError, ValueError]
    assert all("boom" in c["message"] for c in seen)


def test_pubsub_late_joiner_misses_earlier_messages_and_order_is_kept() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[int], list[int]]:
        net = _net(loop)
        clock = VirtualClock(loop)
        pub = MemBus(net, "marketdata", "md-1").publisher("", "marketdata", "md-1", hwm=10,
                                                          clock=clock)
        early = MemBus(net, "risk", "r-1").subscriber("", ["hb."], hwm=100, name="risk",
                                                      clock=clock)
        from bus.messages import Heartbeat

        def hb(n: int) -> Heartbeat:
            return Heartbeat(actor="marketdata", pid=n, state="READY", ready=True,
                             uptime_s=0.0, counters={})
        pub.publish(hb(1))
        await asyncio.sleep(0.01)
        late = MemBus(net, "strategy", "s-1").subscriber("", ["hb."], hwm=100,
                                                         name="strategy", clock=clock)
        for n in range(2, 6):
            pub.publish(hb(n))
        got_early = [(await early.recv())[1].body.pid for _ in range(5)]
        got_late = [(await late.recv())[1].body.pid for _ in range(4)]
        return got_early, got_late

    _, (early, late) = run(main)
    assert early == [1, 2, 3, 4, 5]
    assert late == [2, 3, 4, 5]


def test_request_retries_keep_the_id_and_the_server_answers_once() -> None:
    calls: list[str] = []

    async def main(loop: VirtualTimeLoop) -> object:
        net = _net(loop)

        async def handler(req: CommandRequest[Ping]) -> None:
            calls.append(req.request_id)
            await asyncio.sleep(3.0)  # longer than the caller's timeout: it retries

        MemBus(net, "executor", "e-1").server("ipc:///x/cmd.executor", handler,
                                              commands=PingCommand)
        client = MemClient(net, "ipc:///x/cmd.executor", "risk", timeout_s=2.0, retries=2)
        return await client.request(Ping())

    _, reply = run(main)
    assert reply is None  # Ping's answer
    assert len(calls) == 1  # the retry was answered from the in-flight result


def test_request_to_a_dead_server_fails_after_its_attempts() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        net = _net(loop)
        client = MemClient(net, "ipc:///x/cmd.executor", "risk", timeout_s=2.0, retries=1)
        with pytest.raises(RequestFailed, match="no reply from cmd.executor after 2"):
            await client.request(Ping())
        return loop.time()

    _, took = run(main)
    assert took == pytest.approx(4.0)


def test_the_roles_apply_on_the_in_memory_bus() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        net = _net(loop)

        async def handler(req: CommandRequest[Ping]) -> None:
            return None

        MemBus(net, "executor", "e-1").server("ipc:///x/cmd.executor", handler,
                                              commands=PingCommand)
        stranger = MemClient(net, "ipc:///x/cmd.executor", "marketdata", timeout_s=1.0,
                             retries=0)
        with pytest.raises(RequestFailed, match="may not send"):
            await stranger.request(Ping())

    run(main)
    assert packet_encoder  # the frames are the wire's own encoding


SECRET = "YnRjYm90LWV4Y2hhbmdlLXNpbS1zZWNyZXQtdjEhIQ=="  # the simulator's public test secret


def _venue(loop: VirtualTimeLoop, path: Path) -> InProcessExchange:
    return InProcessExchange(
        loop, random.Random(5), Trace(loop.time), symbols=["SOLTRY"],
        balances={"TRY": Decimal("100000"), "SOL": Decimal("0")},
        wall_ms=lambda: 1_767_603_600_000 + int(loop.time() * 1000), market_seed=9,
        state_path=path)


async def _submit(venue: InProcessExchange, cid: str) -> HttpResponse:
    body = msgspec.json.encode({"newOrderClientId": cid, "pairSymbol": "SOLTRY",
                                "price": "7000", "quantity": "1", "orderMethod": "limit",
                                "orderType": "buy"})
    return await venue.handle("t", "POST", "/api/v1/order", None, body, 5.0)


def test_a_crashed_venue_refuses_then_continues_from_its_state_file(tmp_path: Path) -> None:
    """The venue fault: while down every request is refused (provably not sent); an
    answer in flight at the crash is lost (a timeout: done or not, unknown); after the
    restart the account is what was committed, both orders included, funds locked."""
    async def main(loop: VirtualTimeLoop) -> None:
        venue = _venue(loop, tmp_path / "state.db")
        assert (await _submit(venue, "first")).status == 200
        executed = asyncio.Event()
        venue.on_submitted = lambda _fields, _status, _lost: executed.set()
        in_flight = asyncio.ensure_future(_submit(venue, "second"))
        await executed.wait()  # "second" executed, its answer on its way back
        locked = venue.engine.account.locked["TRY"]
        venue.crash()
        with pytest.raises(ExchangeTimeout):
            await in_flight
        with pytest.raises(ConnectError):
            await _submit(venue, "third")
        venue.tick()  # a dead market does not move
        venue.restart()
        assert sorted(o.client_id for o in venue.engine.orders.values()) == ["first", "second"]
        assert venue.engine.account.locked["TRY"] == locked > Decimal("14000")
        assert (await _submit(venue, "third")).status == 200
        venue.close()

    run(main)


def test_the_private_websocket_in_process(tmp_path: Path) -> None:
    """The executor's real BtcTurkWebSocket against the venue's hub: login, the private
    events of an order, a repeated frame (the fault), a dropped connection and the
    reconnect, refusal while the venue is down, and a fresh hub after its restart."""
    async def main(loop: VirtualTimeLoop) -> None:
        venue = InProcessExchange(
            loop, random.Random(5), Trace(loop.time), symbols=["SOLTRY"],
            balances={"TRY": Decimal("100000"), "SOL": Decimal("0")},
            wall_ms=lambda: 1_767_603_600_000 + int(loop.time() * 1000), market_seed=9,
            state_path=tmp_path / "state.db", credentials={"k": SECRET})
        seen: list[object] = []

        async def on_event(ev: object) -> None:
            seen.append(ev)

        clock = VirtualClock(loop)
        ws = BtcTurkWebSocket("ws://sim", subscriptions=[], on_event=on_event, api_key="k",
                              api_secret=SECRET, session=venue.ws_session("t"),
                              heartbeat_s=4.0, mono_ns=clock.mono_ns, wall_ns=clock.wall_ns)
        task = asyncio.ensure_future(ws.run())
        await asyncio.sleep(1.0)
        assert ws.logged_in and ws.counters["connects"] == 1
        venue.ws.faults.private_repeat = 1.0  # every private frame twice
        assert (await _submit(venue, "c1")).status == 200
        await asyncio.sleep(1.0)
        inserts = [e for e in seen if isinstance(e, OrderInsert)]
        assert len(inserts) == 2 and inserts[0].client_order_id == "c1"
        venue.ws.faults.private_repeat = 0.0
        venue.ws.conns[0].close("dropped (test)")
        await asyncio.sleep(5.0)
        assert any(isinstance(e, WsDisconnected) for e in seen)
        assert ws.counters["connects"] == 2 and ws.logged_in
        venue.crash()
        await asyncio.sleep(3.0)
        assert not ws.connected
        venue.restart()
        await asyncio.sleep(40.0)  # the client's backoff grows while refused
        assert ws.connected and ws.logged_in
        ws.stop()
        await task
        venue.close()

    run(main)


def test_the_public_websocket_in_process(tmp_path: Path) -> None:
    """Marketdata's side of the hub: the venue's tick publishes 431 books and 422 trades
    to a subscriber; a frozen pair's frames stop while the socket stays up (the other
    pair's flow, so no stall); a market standing still makes the socket quiet, and with
    aiohttp's 20 s heartbeat a 10 s stall timeout fires (as on a real socket), then the
    client reconnects and gets the join snapshots."""
    async def main(loop: VirtualTimeLoop) -> None:
        venue = InProcessExchange(
            loop, random.Random(5), Trace(loop.time), symbols=["BTCTRY", "SOLTRY"],
            balances={"TRY": Decimal("100000")},
            wall_ms=lambda: 1_767_603_600_000 + int(loop.time() * 1000), market_seed=9,
            state_path=tmp_path / "state.db")
        books: list[OrderBookSnapshot] = []
        trades: list[TradeEvent] = []

        async def on_event(ev: object) -> None:
            if isinstance(ev, OrderBookSnapshot):
                books.append(ev)
            elif isinstance(ev, TradeEvent) and not ev.snapshot:
                trades.append(ev)

        clock = VirtualClock(loop)
        ws = BtcTurkWebSocket("ws://sim", on_event=on_event, stall_timeout_s=10.0,
                              subscriptions=[("orderbook", "BTCTRY"), ("orderbook", "SOLTRY"),
                                             ("trade", "BTCTRY")],
                              session=venue.ws_session("md"), mono_ns=clock.mono_ns,
                              wall_ns=clock.wall_ns)
        task = asyncio.ensure_future(ws.run())
        ticking = True

        async def market() -> None:
            while True:
                await asyncio.sleep(1.0)
                if ticking:
                    venue.tick()

        ticker = asyncio.ensure_future(market())
        await asyncio.sleep(10.5)
        assert {b.pair for b in books} == {"BTCTRY", "SOLTRY"} and len(books) >= 20
        assert books[-1].change_set == venue.market.books[books[-1].pair].change_set
        assert trades and ws.counters["stalls"] == 0
        venue.ws.faults.public_frozen_until["SOLTRY"] = loop.time() + 30.0
        books.clear()
        await asyncio.sleep(25.0)
        assert {b.pair for b in books} == {"BTCTRY"} and len(books) >= 24
        assert ws.connected and ws.counters["stalls"] == 0 and ws.counters["connects"] == 1
        ticking = False  # the market stands still: no frame at all
        books.clear()
        await asyncio.sleep(12.0)
        assert ws.counters["stalls"] == 1 and ws.counters["connects"] == 2
        assert {b.pair for b in books} == {"BTCTRY", "SOLTRY"}  # the join snapshots
        ws.stop()
        ticker.cancel()
        await task
        venue.close()

    run(main)


def test_book_versions_say_when_the_market_left_a_published_book() -> None:
    """fresh_data's truth: a version is superseded at the tick that recorded the next
    one (never earlier than the truth); the newest is current (None); a venue restart
    starts the record again (its walk repeats change sets)."""
    v = BookVersions()
    v.moved("BTCTRY", 10, 1_000, 1.0)
    v.moved("BTCTRY", 12, 2_000, 2.0)  # 11: our order between ticks, unrecorded
    v.moved("BTCTRY", 13, 3_000, 3.0)
    v.moved("BTCTRY", 13, 3_000, 4.0)  # a frozen pair: not newer, not recorded
    assert v.superseded_at("BTCTRY", "ws", 10) == 2.0
    assert v.superseded_at("BTCTRY", "ws", 11) == 2.0
    assert v.superseded_at("BTCTRY", "ws", 13) is None
    assert v.superseded_at("BTCTRY", "rest", 1_500) == 2.0
    assert v.superseded_at("BTCTRY", "ws", 5) == 1.0  # older than the record: its start
    assert v.superseded_at("ETHTRY", "ws", 5) is None
    v.restarted()
    v.moved("BTCTRY", 11, 4_000, 9.0)
    assert v.superseded_at("BTCTRY", "ws", 10) == 9.0
    assert v.superseded_at("BTCTRY", "ws", 11) is None
