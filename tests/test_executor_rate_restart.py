"""A busy executor SIGKILLed and restarted trips no 429: the restarted client paces from
the requests its previous run sent (the rate journal), as the exchange still counts them.

Real processes (bus, executor) against the simulator with BTCTurk's rate limits on. The
executor polls flat out (open orders, user trades and balances every 50 ms, no private
socket) and the test submits a burst of orders, so its user-trades and balances windows
(120 a minute) are spent within seconds; then it is killed and started again inside the
same exchange minute. Without the journal the restart's recovery reads go straight into
the spent windows (429s within a second: checked by hand on the code before the journal).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.messages import Heartbeat, OrderAck
from tests.executor_harness import Rig, deterministic_book, order
from tests.helpers import wait_for
from tests.sim_fixtures import SimProcess, start_sim_process
from tests.test_executor_private_ws import BusTap


@pytest.fixture(scope="module")
def limited_sim() -> Iterator[SimProcess]:
    sim = start_sim_process(rate_limits=True)
    try:
        yield sim
    finally:
        sim.stop()


def _heartbeat(tap: BusTap, pid: int) -> Heartbeat | None:
    hbs = [b for _, b in list(tap.items) if isinstance(b, Heartbeat) and b.pid == pid]
    return hbs[-1] if hbs else None


def _counters(tap: BusTap, pid: int) -> dict[str, Any]:
    hb = _heartbeat(tap, pid)
    return dict(hb.counters) if hb is not None else {}


def _busy_then_restart(tmp_path: Path, sim: SimProcess) -> tuple[Rig, BusTap, int, float]:
    """Returns the rig, its bus tap, the restarted executor's pid and when the first run
    started (monotonic: its first request opened the exchange's windows)."""
    sim.reset({"TRY": "10000000", "BTC": "1"})
    deterministic_book(sim)
    rig = Rig(tmp_path, sim, executor={"private_ws": False, "order_poll_interval_s": 0.05,
                                       "balance_refresh_s": 0.05,
                                       "max_open_orders_per_symbol": 50})
    rig.start_bus()
    tap = BusTap(rig)
    time.sleep(0.2)  # the tap's subscription reaches the bus
    started = time.monotonic()
    rig.start_executor()
    first = rig.procs["executor"].pid
    for _ in range(30):
        ack = rig.submit(order(f"BTCTRY-buy-{uuid.uuid4().hex[:16]}", price="3500000"))
        assert isinstance(ack, OrderAck) and ack.status == "accepted", ack
    # The windows are spent when the client starts holding requests back.
    wait_for(lambda: _counters(tap, first).get("rate_waits", 0) > 0, timeout=30,
             what="the first run's rate windows full")
    assert sim.state()["rate_limited"] == 0
    assert _counters(tap, first).get("http_429", 0) == 0
    rig.kill("executor")
    rig.start_executor(wait_ready=False)
    return rig, tap, rig.procs["executor"].pid, started


def test_restart_after_a_busy_minute_trips_no_429(tmp_path: Path,
                                                   limited_sim: SimProcess) -> None:
    rig, tap, pid, _ = _busy_then_restart(tmp_path, limited_sim)
    try:
        # Its reads (recovery's, then the poll loop's) want out at once; the spent ones
        # wait for the exchange's minute instead.
        wait_for(lambda: _counters(tap, pid).get("rate_waits", 0) > 0, timeout=15,
                 what="the restarted executor holding its reads for the remembered windows")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert rig.procs["executor"].poll() is None, rig.log()
            assert limited_sim.state()["rate_limited"] == 0
            time.sleep(0.25)
        assert _counters(tap, pid).get("http_429", 0) == 0
        assert (tmp_path / "data" / "exec.db.ratewindow").stat().st_mode & 0o777 == 0o600
    finally:
        tap.close()
        rig.close()


@pytest.mark.slow
def test_restart_after_a_busy_minute_recovers_and_trades_without_429(
        tmp_path: Path, limited_sim: SimProcess) -> None:
    """The long form: the restarted executor trades another burst, its held reads go
    out once the exchange's minute is over, and neither run ever saw a 429."""
    rig, tap, pid, started = _busy_then_restart(tmp_path, limited_sim)
    try:
        rig.wait_ready(timeout=30)
        for _ in range(20):
            ack = rig.submit(order(f"BTCTRY-buy-{uuid.uuid4().hex[:16]}", price="3500000"))
            assert isinstance(ack, OrderAck) and ack.status == "accepted", ack
        # Through the end of the first run's exchange minute and well past it.
        polls_held = _counters(tap, pid).get("polls", 0)
        while time.monotonic() < started + 75:
            assert rig.procs["executor"].poll() is None, rig.log()
            assert limited_sim.state()["rate_limited"] == 0
            time.sleep(0.5)
        counters = _counters(tap, pid)
        assert counters.get("http_429", 0) == 0
        assert counters.get("polls", 0) > polls_held  # the held poll loop went on
    finally:
        tap.close()
        rig.close()
