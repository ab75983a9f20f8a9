"""Surprising exchange data and exchange outages, with real processes (bus + executor
[+ reconciler]) against the simulator: never a crash loop, always an answer.

- a vanished order (the simulator loses it behind the bot's back) → VANISHED, an
  incident on the bus and in the DB, the safety latch naming it; `orders resolve`
  settles it (audited) and clears the latch;
- an exchange id the DB already holds for another order → incident + latch, the
  executor stays up and answers;
- a fill under our prefix for an order the DB does not know → incident + latch;
- a 20 s outage (503 on every call) → the executor says "exchange" within 5 s, refuses
  submits, needs no latch, and trades again within 30 s of the end; no client order id
  reaches the simulator twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.executor.db import ExecutorDB, OrderRow
from bus.messages import Heartbeat, Incident, OrderAck, OrderEvent, StateTransition
from bus.transport import Subscriber
from shared.btcturk.client import BtcTurkClient
from shared.ids import client_order_id
from tests.executor_harness import PREFIX, REPO, Rig, deterministic_book, order
from tests.helpers import wait_for
from tests.sim_fixtures import SimProcess, sim, sim_process  # noqa: F401


def intent() -> str:
    return f"BTCTRY-buy-{uuid.uuid4().hex[:16]}"


class BusWatch:
    """Collects bus messages of some topic prefixes on a thread of its own."""

    def __init__(self, rig: Rig, prefixes: list[str]) -> None:
        self.items: list[tuple[float, str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(rig, prefixes)),
                                        daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    async def _run(self, rig: Rig, prefixes: list[str]) -> None:
        import zmq.asyncio
        ctx = zmq.asyncio.Context()
        sub = Subscriber(ctx, rig.cfg.bus_sub_endpoint, prefixes, auth=rig.auth())
        self._ready.set()
        while not self._stop.is_set():
            try:
                topic, pkt = await asyncio.wait_for(sub.recv(), 0.2)
            except TimeoutError:
                continue
            self.items.append((time.monotonic(), topic, pkt.body))
        sub.close()
        ctx.destroy(0)

    def bodies(self, kind: type) -> list[Any]:
        return [b for _, _, b in list(self.items) if isinstance(b, kind)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def order_state(rig: Rig, cid: str) -> str | None:
    db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
    try:
        row = db.get_order(cid)
        return row.state if row else None
    finally:
        db.close()


def incidents(rig: Rig) -> list[tuple]:
    db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
    try:
        return db.incidents()
    finally:
        db.close()


def resting(rig: Rig) -> str:
    assert rig.sim is not None
    deterministic_book(rig.sim)
    req = order(intent())  # 3,500,000 under the 3,599,000 bid: it rests
    ack = rig.submit(req)
    assert isinstance(ack, OrderAck) and ack.status == "accepted", ack
    wait_for(lambda: order_state(rig, req.client_order_id) == "OPEN", timeout=15,
             what=f"order open\n{rig.log()}")
    return req.client_order_id


def test_vanished_order_latches_and_resolve_settles_it(tmp_path: Path, sim: SimProcess) -> None:  # noqa: F811
    rig = Rig(tmp_path, sim)
    try:
        rig.start_bus()
        watch = BusWatch(rig, ["incident.", "order."])
        rig.start_executor()
        cid = resting(rig)
        sim.admin("POST", "/sim/forget-order", {"client_order_id": cid})
        wait_for(lambda: order_state(rig, cid) == "VANISHED", timeout=30, what="VANISHED")
        snap = rig.snapshot()  # the command socket answers
        assert snap.latches.safety_latch and cid in snap.latches.reason
        assert all(o.client_order_id != cid for o in snap.open_orders)
        kinds = [i[2] for i in incidents(rig)]
        assert "vanished" in kinds
        wait_for(lambda: any(b.kind == "vanished" and b.client_order_id == cid
                             and b.latch == "safety_latch" for b in watch.bodies(Incident)),
                 timeout=5, what="incident on the bus")
        refused = rig.submit(order(intent()))
        assert isinstance(refused, OrderAck) and refused.status == "rejected"
        assert refused.reason == "safety_latch"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "actors.supervisor", "--config",
                                   str(rig.config), "orders", "resolve", *args],
                                  cwd=REPO, capture_output=True, text=True, timeout=30)
        bad = cli("bb-nope", "--as", "cancelled", "--reason", "x")
        assert bad.returncode == 1 and "unknown order" in bad.stderr
        ok = cli(cid, "--as", "cancelled", "--reason", "lost by the simulator")
        assert ok.returncode == 0, ok.stderr
        assert "CANCELED" in ok.stdout and "latch cleared" in ok.stdout
        assert order_state(rig, cid) == "CANCELED"
        again = cli(cid, "--as", "filled", "--reason", "twice")
        assert again.returncode == 1 and "only a VANISHED order" in again.stderr
        db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
        try:
            (res,) = db.resolutions()
            assert res[2:6] == (cid, "VANISHED", "CANCELED", "lost by the simulator")
        finally:
            db.close()
        cleared = rig.snapshot().latches
        assert not cleared.safety_latch
        assert cleared.reason == "", cleared  # a cleared latch's reason is not current
        wait_for(lambda: any(b.client_order_id == cid and b.state == "CANCELED"
                             for b in watch.bodies(OrderEvent)), timeout=5,
                 what="CANCELED published")
        ack = rig.submit(order(intent()))
        assert isinstance(ack, OrderAck) and ack.status == "accepted", ack
        assert rig.procs["executor"].poll() is None
        watch.close()
    finally:
        rig.close()


def test_vanished_order_resolved_as_filled_books_the_fill(tmp_path: Path, sim: SimProcess) -> None:  # noqa: F811
    rig = Rig(tmp_path, sim)
    try:
        rig.start_bus()
        rig.start_executor()
        cid = resting(rig)
        sim.admin("POST", "/sim/forget-order", {"client_order_id": cid})
        wait_for(lambda: order_state(rig, cid) == "VANISHED", timeout=30, what="VANISHED")
        r = subprocess.run([sys.executable, "-m", "actors.supervisor", "--config",
                            str(rig.config), "orders", "resolve", cid, "--as", "filled",
                            "--reason", "the exchange confirmed by mail"],
                           cwd=REPO, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
        try:
            row = db.get_order(cid)
            assert row is not None and row.state == "FILLED" and row.filled_quantity == row.quantity
            (fill,) = db.fills_of_order(cid)
            assert fill.trade_id == f"resolve-{cid}" and fill.quantity == row.quantity
            assert fill.price == row.price and fill.fee == 0
            assert db.positions("paper")["BTCTRY"].quantity == row.quantity
        finally:
            db.close()
    finally:
        rig.close()


def test_exchange_id_collision_is_an_incident_not_a_crash(tmp_path: Path, sim: SimProcess) -> None:  # noqa: F811
    rig = Rig(tmp_path, sim)
    try:
        rig.start_bus()
        rig.start_executor()
        first = resting(rig)
        db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
        try:
            row = db.get_order(first)
            assert row is not None and row.exchange_order_id is not None
            taken = row.exchange_order_id + 1  # the simulator's next id
            now = time.time()
            # A row of "an earlier account" holding the id the exchange will give next.
            db.insert_adopted(OrderRow("bb-old", "old", "paper", "BTCTRY", "buy", "limit",
                                       Decimal(1), Decimal(1), Decimal(1), "FILLED", taken,
                                       0.0, "old", True, now, now), 3600)
        finally:
            db.close()
        req = order(intent())
        ack = rig.submit(req)
        assert isinstance(ack, OrderAck) and ack.status == "accepted"
        wait_for(lambda: any(i[2] == "id_collision" for i in incidents(rig)), timeout=15,
                 what="id collision incident")
        time.sleep(2.0)  # polls keep meeting the same collision: still up, one incident
        assert rig.procs["executor"].poll() is None, rig.log()
        assert [i[2] for i in incidents(rig)].count("id_collision") == 1
        snap = rig.snapshot()
        assert snap.latches.safety_latch and "id_collision" in snap.latches.reason
        assert str(taken) in snap.latches.reason
        db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
        try:
            assert db.get_key("submit", req.client_order_id).status == "COMMITTED"  # type: ignore[union-attr]
        finally:
            db.close()
    finally:
        rig.close()


def test_fill_of_an_unknown_order_of_ours_is_an_incident(tmp_path: Path, sim: SimProcess) -> None:  # noqa: F811
    rig = Rig(tmp_path, sim)
    try:
        rig.start_bus()
        rig.start_executor()
        stranger = client_order_id(PREFIX, f"BTCTRY-buy-{uuid.uuid4().hex[:12]}")

        async def place() -> None:
            async with BtcTurkClient(sim.base_url, sim.api_key, sim.api_secret) as client:
                # Crosses the ask: filled at once, never seen open, no row in the DB.
                await client.submit_order("BTCTRY", "buy", "limit", Decimal("0.0001"),
                                          Decimal("3700000"), stranger)
        asyncio.run(place())
        wait_for(lambda: any(i[2] == "unknown_fill" and i[4] == stranger
                             for i in incidents(rig)), timeout=20, what="unknown fill incident")
        snap = rig.snapshot()
        assert snap.latches.safety_latch and "unknown_fill" in snap.latches.reason
        assert rig.procs["executor"].poll() is None
    finally:
        rig.close()


@pytest.mark.parametrize("outage_s", [
    6.0,  # CI's short form
    pytest.param(20.0, marks=pytest.mark.slow),  # the 20 s outage
])
def test_exchange_outage_halts_then_trades_again_without_an_operator(
        tmp_path: Path, sim: SimProcess, outage_s: float) -> None:  # noqa: F811
    rig = Rig(tmp_path, sim)
    try:
        rig.start_bus()
        watch = BusWatch(rig, ["hb.executor", "state.executor", "incident."])
        rig.start_executor()
        rig.start_reconciler()
        resting(rig)
        sim.add_fault(kind="http_500", status=503, duration_s=outage_s)
        t0 = time.monotonic()

        def halted() -> bool:
            return any("exchange" in getattr(b.info, "halt", "") for b in watch.bodies(Heartbeat))
        wait_for(halted, timeout=8, interval=0.05, what="executor says exchange")
        said = min(t for t, _, b in watch.items if isinstance(b, Heartbeat)
                   and "exchange" in getattr(b.info, "halt", ""))
        transitions = [b for b in watch.bodies(StateTransition)
                       if b.to_state == "DEGRADED_RECOVERY" and "exchange" in b.trigger]
        first = min([said] + [t for t, _, b in watch.items if b in transitions])
        assert first - t0 <= 5.0, f"exchange outage named after {first - t0:.1f}s"
        refused = rig.submit(order(intent()))
        assert isinstance(refused, OrderAck) and refused.status == "rejected"
        assert refused.reason == "exchange"
        end = t0 + outage_s
        time.sleep(max(0.0, end - time.monotonic()))
        accepted_at = None
        cids = []
        while time.monotonic() < end + 30:
            req = order(intent())
            ack = rig.submit(req)
            if isinstance(ack, OrderAck) and ack.status == "accepted":
                cids.append(req.client_order_id)
                if wait_for(lambda c=req.client_order_id: order_state(rig, c) in
                            ("OPEN", "FILLED", "PARTIAL", "FAILED"), timeout=10,
                            what="sent") and order_state(rig, req.client_order_id) == "OPEN":
                    accepted_at = time.monotonic()
                    break
            time.sleep(0.5)
        assert accepted_at is not None, f"no order accepted 30 s after the outage\n{rig.log()}"
        snap = rig.snapshot()
        assert not (snap.latches.safety_latch or snap.latches.kill_switch), snap.latches
        assert any(b.kind == "exchange_unreachable" for b in watch.bodies(Incident))
        counts = Counter(r.get("newOrderClientId") for r in sim.received_orders())
        assert [c for c, n in counts.items() if n > 1] == []
        watch.close()
    finally:
        rig.close()


def test_balance_drift_latches_after_n_reconciles_with_a_persisted_baseline(
        tmp_path: Path, sim: SimProcess) -> None:  # noqa: F811
    from bus.messages import ReconcileQuery, ReconcileResult
    sim.reset({"TRY": "100000", "BTC": "0.5"})
    rig = Rig(tmp_path, sim, executor={"balance_drift_tolerance": "0.00000001",
                                       "balance_drift_reconciles": 3,
                                       "balance_drift_min_s": 0})
    try:
        rig.start_bus()
        rig.start_executor()

        def reconcile() -> ReconcileResult:
            r = rig.request(ReconcileQuery(symbol="BTCTRY"), timeout=10)
            assert isinstance(r, ReconcileResult)
            return r
        assert reconcile().ok  # quiet: no orders, no keys → the baseline (0.5 BTC) is taken
        db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
        try:
            assert db.get_meta("balance_baseline:paper") == '{"BTC": "0.5"}'
        finally:
            db.close()
        # Money moves that no fill explains: 0.1 BTC more on the exchange.
        sim.reset({"TRY": "100000", "BTC": "0.6"})
        rig.kill("executor")
        rig.start_executor()  # a restart must not re-take the baseline
        first = reconcile()
        assert not any("balance BTC" in d for d in first.details)  # once may be a fill
        assert not rig.snapshot().latches.safety_latch
        second = reconcile()
        assert any("balance BTC: exchange differs from fills by 0.1" in d
                   for d in second.details), second.details
        assert not rig.snapshot().latches.safety_latch
        reconcile()
        snap = rig.snapshot()
        assert snap.latches.safety_latch
        assert "balance_drift" in snap.latches.reason
        assert "exchange 0.6" in snap.latches.reason and "drift 0.1" in snap.latches.reason
    finally:
        rig.close()
