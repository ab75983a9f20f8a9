"""Reconciler: pure escalation/accounting logic, and as a real process against the
executor and the simulator (persistent reconcile failures latch trading)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal as D
from pathlib import Path

from actors.reconciler.logic import (
    IncidentDetector,
    breaches,
    pnl_rows,
    update_failures,
)
from bus.messages import Ack, Control, OrderAck, Position, ReconcileReport, SetLatch
from bus.transport import Subscriber
from tests.executor_harness import Rig, order
from tests.helpers import wait_for
from tests.sim_fixtures import SimProcess, sim, sim_process  # noqa: F401

# --- pure logic -----------------------------------------------------------------------------


def test_failures_count_consecutively_and_reset() -> None:
    c = update_failures({}, ["A", "B"], ["A"])
    c = update_failures(c, ["A", "B"], ["A", "B"])
    assert c == {"A": 2, "B": 1}
    c = update_failures(c, ["A", "B"], ["B"])
    assert c == {"A": 0, "B": 2}
    assert breaches(c, 2) == ["B"] and breaches(c, 3) == []
    # an undeliverable request fails every symbol
    assert update_failures({}, [], ["A", "B"]) == {"A": 1, "B": 1}


def test_pnl_rows_mark_at_the_mid_and_carry_net() -> None:
    rows = pnl_rows([Position(symbol="X", quantity=D(1), avg_cost=D(90), realized_pnl=D(-1),
                              fees=D(1)),
                     Position(symbol="Y", quantity=D(2), avg_cost=D(5))],
                    {"X": (D(100), D(102))})
    x, y = rows
    assert (x.mark, x.unrealized, x.realized, x.fees) == (D(101), D(11), D(-1), D(1))
    assert x.net == D(-1) + D(11) - D(1)
    assert y.mark is None and y.unrealized == 0 and y.net == 0  # no book: nothing to mark


def test_incident_detection() -> None:
    d = IncidentDetector()
    assert not d.heartbeat("a")  # first sight is not a restart
    assert not d.heartbeat("a")
    assert d.heartbeat("b")
    assert d.order_state("UNKNOWN", "bb-1") and not d.order_state("OPEN", "bb-1")
    assert d.bus_gaps(1) and not d.bus_gaps(1)
    assert d.executor_state("DEGRADED_RECOVERY") and not d.executor_state("READY")
    assert len(d.take()) == 4 and d.take() == []


# --- processes ------------------------------------------------------------------------------



def test_persistent_failures_latch_and_survive_restart(rig: Rig, sim: SimProcess) -> None:  # noqa: F811
    rig.start_executor()
    rig.start_reconciler()
    time.sleep(1.0)
    assert not rig.snapshot().latches.safety_latch  # healthy rounds do not latch
    # An exchange that answers, but nonsense: reconcile keeps failing (an unreachable one,
    # 5xx or refused, is an outage the executor handles itself: test_executor_incidents).
    sim.add_fault(kind="garbage", path="/api/v1/openorders", duration_s=60)
    wait_for(lambda: rig.snapshot().latches.safety_latch, timeout=30, what="safety latch")
    assert "reconciler" in rig.snapshot().latches.reason
    refused = rig.submit(order("BTCTRY-buy-latched"))
    assert isinstance(refused, OrderAck) and refused.status == "rejected"
    assert refused.reason == "safety_latch"
    sim.clear_faults()
    rig.kill("executor")
    rig.start_executor()
    assert rig.snapshot().latches.safety_latch  # persisted
    assert isinstance(rig.request(SetLatch(latch="safety_latch", value=False,
                                           reason="operator")), Ack)
    ok = rig.submit(order("BTCTRY-buy-after-clear"))
    assert isinstance(ok, OrderAck) and ok.status == "accepted"
    time.sleep(1.5)  # healthy rounds after the clear do not re-latch
    assert not rig.snapshot().latches.safety_latch


def test_unreachable_executor_is_asked_again_not_bypassed(tmp_path: Path) -> None:
    """One writer of latches: with the executor down the reconciler keeps requesting
    SetLatch every round and never writes a latch itself (no kill_switch broadcast)."""
    rig = Rig(tmp_path, None, reconciler={"request_timeout_s": 0.2, "interval_s": 0.2})
    try:
        rig.start_bus()

        async def watch() -> tuple[list[ReconcileReport], list[Control]]:
            sub = Subscriber(rig.ctx, rig.cfg.bus_sub_endpoint, ["reconcile.report", "control"],
                             auth=rig.auth())
            rig.start_reconciler()
            reports: list[ReconcileReport] = []
            controls: list[Control] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(reports) < 2:
                try:
                    _, pkt = await asyncio.wait_for(sub.recv(), 1.0)
                except TimeoutError:
                    continue
                if isinstance(pkt.body, ReconcileReport) and pkt.body.latch_set:
                    reports.append(pkt.body)
                if isinstance(pkt.body, Control):
                    controls.append(pkt.body)
            sub.close()
            return reports, controls
        reports, controls = asyncio.run(watch())
        assert len(reports) == 2, "the latch request is repeated every round"
        for report in reports:
            assert not report.ok and max(report.failures.values()) >= 3
            assert any("SetLatch failed" in d for d in report.details), report.details
        assert controls == []
    finally:
        rig.close()
