"""Executor hard caps (defence in depth, issue 16): pure rules, then a real dry-run
executor refusing each breach with cap:<name>, counting it and recording an incident,
whatever risk said (these tests send SubmitOrder straight to the executor)."""

from __future__ import annotations

from collections import deque
from decimal import Decimal as D
from pathlib import Path

from actors.executor.caps import Caps, breach
from actors.executor.db import ExecutorDB
from bus.messages import OrderAck
from tests.executor_harness import Rig, order

CAPS = Caps(D("1000"), 2, 3, frozenset({"BTCTRY"}))


def test_each_cap_is_checked() -> None:
    recent: deque[float] = deque()
    assert breach(CAPS, "BTCTRY", D("100"), D("10"), 0, recent, 0.0) is None  # == cap: ok
    assert breach(CAPS, "ETHTRY", D("1"), D("1"), 0, recent, 0.0)[0] == "allowed_symbols"  # type: ignore[index]
    assert breach(CAPS, "BTCTRY", D("100"), D("10.01"), 0, recent, 0.0)[0] == "max_order_notional"  # type: ignore[index]
    assert breach(CAPS, "BTCTRY", D("1"), D("1"), 2, recent, 0.0)[0] == "max_open_orders_per_symbol"  # type: ignore[index]
    recent.extend([0.0, 10.0, 20.0])
    assert breach(CAPS, "BTCTRY", D("1"), D("1"), 0, recent, 30.0)[0] == "max_orders_per_minute"  # type: ignore[index]
    assert breach(CAPS, "BTCTRY", D("1"), D("1"), 0, recent, 60.0) is None  # 0.0 left the window
    assert list(recent) == [10.0, 20.0]
    off = Caps(D("0"), 0, 0, frozenset({"BTCTRY"}))
    assert breach(off, "BTCTRY", D("1e9"), D("1e9"), 99, deque([0.0] * 999), 1.0) is None


def test_executor_refuses_breaches_and_records_incidents(tmp_path: Path) -> None:
    rig = Rig(tmp_path, None, mode="dry-run",
              executor={"max_order_notional": "1000", "max_open_orders_per_symbol": 2,
                        "max_orders_per_minute": 3})
    try:
        rig.start_bus()
        rig.start_executor()

        def submit(intent: str, **kw: str) -> OrderAck:
            ack = rig.submit(order(intent, **kw))
            assert isinstance(ack, OrderAck)
            return ack
        # 0.001 BTC at 3,500,000 = 3,500 TRY > 1,000
        big = submit("BTCTRY-buy-big", qty="0.001")
        assert (big.status, big.reason, big.key_status) == ("rejected", "cap:max_order_notional",
                                                           "NONE")
        other = order("ETHTRY-buy-x")
        other = other.__class__(**{**{f: getattr(other, f) for f in other.__struct_fields__},
                                   "symbol": "ETHTRY"})
        ack = rig.submit(other)
        assert isinstance(ack, OrderAck) and ack.reason == "cap:allowed_symbols"
        assert submit("BTCTRY-buy-1").status == "accepted"  # 350 TRY, rests in dry-run
        assert submit("BTCTRY-buy-2").status == "accepted"
        third = submit("BTCTRY-buy-3")
        assert third.reason == "cap:max_open_orders_per_symbol"
        db = ExecutorDB(rig.cfg.path(rig.cfg.executor.db_path))
        try:
            kinds = [i[2] for i in db.incidents()]
            assert kinds.count("cap_breach") == 3
            assert db.get_key("submit", big.client_order_id) is None  # nothing reserved
        finally:
            db.close()
        assert not rig.snapshot().latches.safety_latch  # refused, not latched
    finally:
        rig.close()


def test_orders_per_minute_cap(tmp_path: Path) -> None:
    rig = Rig(tmp_path, None, mode="dry-run",
              executor={"max_orders_per_minute": 2, "max_open_orders_per_symbol": 0})
    try:
        rig.start_bus()
        rig.start_executor()
        acks = [rig.submit(order(f"BTCTRY-buy-m{i}")) for i in range(3)]
        assert [a.status for a in acks] == ["accepted", "accepted", "rejected"]  # type: ignore[union-attr]
        assert acks[2].reason == "cap:max_orders_per_minute"  # type: ignore[union-attr]
    finally:
        rig.close()
