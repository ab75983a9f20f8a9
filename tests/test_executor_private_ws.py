"""The executor follows orders from the private WebSocket, REST polling as the fallback.

Pure watch logic (actors.executor.venues.privatews.py) first, then real processes (bus +
executor) against the simulator, watching what the executor publishes on the bus."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq.asyncio

from actors.executor.venues.privatews import PrivateWsWatch
from bus.messages import ExecutorInfo, Fill, Heartbeat, OrderAck, OrderEvent
from bus.transport import Subscriber
from tests.executor_harness import Rig, deterministic_book, order
from tests.helpers import wait_for
from tests.sim_fixtures import SimProcess, sim, sim_process  # noqa: F401

# --- the watch (pure) -------------------------------------------------------------------------


def test_watch_trusts_only_an_up_socket_and_never_polls_slower_than_asked() -> None:
    w = PrivateWsWatch(fast_s=1.0, slow_s=5.0, grace_s=2.0)
    assert w.poll_interval(up=True) == 5.0 and w.trusted(True)
    assert w.poll_interval(up=False) == 1.0 and not w.trusted(False)
    assert PrivateWsWatch(fast_s=3.0, slow_s=1.0, grace_s=2.0).poll_interval(up=True) == 3.0


def test_watch_poll_found_change_without_event_withdraws_trust_until_an_event() -> None:
    w = PrivateWsWatch(1.0, 5.0, 2.0)
    w.on_poll_changes(["bb-a"], now=10.0, up=True)
    assert w.check(11.9) == [] and w.trusted(True)  # the event may still be on its way
    assert w.check(12.0) == ["bb-a"]
    assert not w.trusted(True) and w.poll_interval(True) == 1.0
    w.on_poll_changes(["bb-b"], now=13.0, up=True)  # already distrusted: nothing pending
    assert w.check(20.0) == []
    w.on_event("bb-c", now=21.0)  # proof of life
    assert w.trusted(True) and w.poll_interval(True) == 5.0


def test_watch_event_either_side_of_the_poll_is_not_a_miss() -> None:
    w = PrivateWsWatch(1.0, 5.0, 2.0)
    w.on_event("bb-a", now=10.0)
    w.on_poll_changes(["bb-a"], now=11.5, up=True)  # the event came first
    w.on_poll_changes(["bb-b"], now=11.5, up=True)
    w.on_event("bb-b", now=12.0)  # the event came just after the poll
    assert w.check(100.0) == [] and w.trusted(True)
    w.on_poll_changes(["bb-a"], now=50.0, up=True)  # an old event does not cover it
    assert w.check(52.0) == ["bb-a"]


def test_watch_ignores_changes_while_down_and_forgets_pending_on_disconnect() -> None:
    w = PrivateWsWatch(1.0, 5.0, 2.0)
    w.on_poll_changes(["bb-a"], now=10.0, up=False)
    assert w.check(20.0) == []
    w.on_poll_changes(["bb-a"], now=30.0, up=True)
    w.on_down()
    assert w.check(40.0) == [] and w.trusted(True)


# --- real processes ---------------------------------------------------------------------------

class BusTap:
    """Collects what the executor publishes (orders, fills, heartbeats) in a thread."""

    def __init__(self, rig: Rig) -> None:
        self.items: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._endpoint = rig.cfg.bus_sub_endpoint
        self._auth = rig.auth()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    async def _run(self) -> None:
        ctx = zmq.asyncio.Context()
        sub = Subscriber(ctx, self._endpoint, ["order.", "fill.", "hb.executor"],
                         auth=self._auth)
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    _, pkt = await asyncio.wait_for(sub.recv(), 0.2)
                except TimeoutError:
                    continue
                self.items.append((time.monotonic(), pkt.body))
        finally:
            sub.close()
            ctx.destroy(linger=0)

    def first(self, pred: Callable[[Any], bool]) -> tuple[float, Any] | None:
        return next(((t, b) for t, b in list(self.items) if pred(b)), None)

    def heartbeat(self) -> Heartbeat | None:
        hbs = [b for _, b in list(self.items) if isinstance(b, Heartbeat)]
        return hbs[-1] if hbs else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def filled(cid: str) -> Callable[[Any], bool]:
    return lambda b: (isinstance(b, OrderEvent) and b.client_order_id == cid
                      and b.state == "FILLED")


def fill_of(cid: str) -> Callable[[Any], bool]:
    return lambda b: isinstance(b, Fill) and b.client_order_id == cid


def opened(cid: str) -> Callable[[Any], bool]:
    return lambda b: (isinstance(b, OrderEvent) and b.client_order_id == cid
                      and b.state == "OPEN" and b.exchange_order_id is not None)


@pytest.fixture()
def make_rig(tmp_path: Path, sim: SimProcess) -> Iterator[Callable[..., tuple[Rig, BusTap]]]:  # noqa: F811
    made: list[tuple[Rig, BusTap]] = []

    def make(**executor: Any) -> tuple[Rig, BusTap]:
        deterministic_book(sim)
        rig = Rig(tmp_path, sim, executor=executor)
        rig.start_bus()
        tap = BusTap(rig)
        made.append((rig, tap))
        time.sleep(0.2)  # the tap's subscription reaches the bus
        rig.start_executor()
        return rig, tap

    yield make
    for rig, tap in made:
        tap.close()
        rig.close()


def ws_status(tap: BusTap, want: str, timeout: float = 10.0) -> Heartbeat:
    def ok() -> bool:
        hb = tap.heartbeat()
        return (hb is not None and isinstance(hb.info, ExecutorInfo)
                and hb.info.private_ws == want)
    wait_for(ok, timeout=timeout, what=f"private_ws {want}")
    hb = tap.heartbeat()
    assert hb is not None
    return hb


def resting_buy(rig: Rig, tap: BusTap) -> str:
    req = order(f"BTCTRY-buy-{uuid.uuid4().hex[:16]}", price="3500000")
    ack = rig.submit(req)
    assert isinstance(ack, OrderAck) and ack.status == "accepted"
    cid = req.client_order_id
    wait_for(lambda: tap.first(opened(cid)) is not None, timeout=5, what="order open")
    return cid


def cross_it(sim: SimProcess) -> float:  # noqa: F811
    """Asks under our 3 500 000 bid: the simulator fills the resting order now."""
    t0 = time.monotonic()
    sim.set_book("BTCTRY", [["3400000", "0.5"]], [["3490000", "0.5"]])
    return t0


def reset_book(sim: SimProcess) -> None:  # noqa: F811
    deterministic_book(sim)


@pytest.mark.parametrize("private_ws", [True, False])
def test_fill_is_published_within_2s_only_through_the_private_ws(
        make_rig: Callable[..., tuple[Rig, BusTap]], sim: SimProcess,  # noqa: F811
        private_ws: bool) -> None:
    # A 30 s poll: within the 2 s below only the socket can have woken the executor.
    rig, tap = make_rig(order_poll_interval_s=30.0, private_ws=private_ws)
    hb = ws_status(tap, "connected" if private_ws else "off")
    events_before = hb.counters["ws_private_events"]
    cid = resting_buy(rig, tap)
    t0 = cross_it(sim)
    if private_ws:
        wait_for(lambda: tap.first(filled(cid)) and tap.first(fill_of(cid)), timeout=2.0,
                 what="FILLED and its Fill from the socket")
        for pred in (filled(cid), fill_of(cid)):
            seen = tap.first(pred)
            assert seen is not None and seen[0] - t0 < 2.0
        fill = tap.first(fill_of(cid))[1]  # type: ignore[index]
        assert fill.quantity == order("x").quantity
        # Heartbeat: the insert, match and trade events were ours; at least one refresh.
        hb = tap.heartbeat()
        wait_for(lambda: (h := tap.heartbeat()) is not None and h is not hb
                 and h.counters["ws_refreshes"] >= 1, timeout=3, what="heartbeat counters")
        hb = ws_status(tap, "connected")
        assert hb.counters["ws_private_events"] >= events_before + 3
        assert hb.counters["ws_missed_events"] == 0
        assert hb.counters["ws_login_failed"] == 0
    else:
        time.sleep(2.0)
        assert tap.first(filled(cid)) is None and tap.first(fill_of(cid)) is None
        hb = ws_status(tap, "off")
        assert hb.counters["ws_private_events"] == 0 and hb.counters["ws_refreshes"] == 0


def test_dropped_socket_falls_back_to_fast_polling(
        make_rig: Callable[..., tuple[Rig, BusTap]], sim: SimProcess) -> None:  # noqa: F811
    # A 30 s stretched poll: the fill can only come from polling at the 1 s interval.
    rig, tap = make_rig(order_poll_interval_s=1.0, ws_poll_interval_s=30.0)
    ws_status(tap, "connected")
    cid = resting_buy(rig, tap)
    sim.add_fault(kind="ws_drop", duration_s=15)
    hb = ws_status(tap, "down", timeout=3)
    events = hb.counters["ws_private_events"]
    t0 = cross_it(sim)
    wait_for(lambda: tap.first(filled(cid)) and tap.first(fill_of(cid)), timeout=3.5,
             what="fill picked up by polling")
    assert tap.first(fill_of(cid))[0] - t0 < 3.5  # type: ignore[index]
    assert rig.procs["executor"].poll() is None  # a dead socket never stops the executor
    hb = ws_status(tap, "down")
    assert hb.counters["ws_private_events"] == events  # nothing came through the socket


def test_silent_socket_is_caught_missing_a_fill_and_polling_speeds_up(
        make_rig: Callable[..., tuple[Rig, BusTap]], sim: SimProcess) -> None:  # noqa: F811
    """ws_stall: the socket stays open (transport pings are answered) but delivers
    nothing. The stretched poll finds a fill no event announced: trust is withdrawn and
    the next fill is picked up at the fast interval."""
    rig, tap = make_rig(order_poll_interval_s=1.0, ws_poll_interval_s=3.0)
    ws_status(tap, "connected")
    first = resting_buy(rig, tap)
    second = resting_buy(rig, tap)
    sim.add_fault(kind="ws_stall", duration_s=30)
    time.sleep(0.3)
    t0 = cross_it(sim)  # fills both resting buys
    wait_for(lambda: tap.first(fill_of(first)) and tap.first(fill_of(second)), timeout=5,
             what="fills by the stretched poll")
    assert tap.first(fill_of(first))[0] - t0 < 5.0  # type: ignore[index]
    hb = ws_status(tap, "down", timeout=5)
    assert hb.counters["ws_missed_events"] >= 1
    reset_book(sim)
    third = resting_buy(rig, tap)  # its insert event is swallowed too: still distrusted
    t1 = cross_it(sim)
    wait_for(lambda: tap.first(fill_of(third)), timeout=2.5, what="fill at the fast interval")
    assert tap.first(fill_of(third))[0] - t1 < 2.5  # type: ignore[index]
