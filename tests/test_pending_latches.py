"""Latch requests that cannot reach the executor wait in data/pending-latches.json: the
file format (pure), the executor applying them before anything else on its next start,
and the supervisor's give-up kill switch going the same way when the executor is the
actor it gave up on."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared import pending_latches
from tests.executor_harness import Rig, order
from tests.helpers import wait_for


def test_pending_file_is_private_ordered_and_strict(tmp_path: Path) -> None:
    path = pending_latches.path_in(tmp_path / "data")
    assert pending_latches.load(path) == []
    pending_latches.append(path, "kill_switch", True, "gave up", now=1.0)
    pending_latches.append(path, "paused", True, "op", now=2.0)
    pending_latches.append(path, "kill_switch", False, "op cleared", now=3.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    items = pending_latches.load(path)
    assert [(i.latch, i.value) for i in items] == [("kill_switch", True), ("paused", True),
                                                   ("kill_switch", False)]
    eff = pending_latches.effective(items)
    assert eff["kill_switch"].value is False and eff["paused"].value is True
    with pytest.raises(ValueError):
        pending_latches.append(path, "nonsense", True, "x")
    path.write_text('[{"latch": "nonsense", "value": true, "reason": "", "at": 0}]')
    with pytest.raises(ValueError):
        pending_latches.load(path)


def test_executor_applies_pending_requests_before_anything_else(tmp_path: Path) -> None:
    rig = Rig(tmp_path, None, mode="dry-run")
    try:
        path = pending_latches.path_in(rig.cfg.data_path)
        pending_latches.append(path, "kill_switch", True, "supervisor gave up on executor")
        rig.start_bus()
        rig.start_executor()
        snap = rig.snapshot()
        assert snap.latches.kill_switch and "gave up" in snap.latches.reason
        assert not path.exists()
        ack = rig.submit(order("BTCTRY-buy-pending-1"))
        assert ack is not None and ack.status == "rejected" and ack.reason == "kill_switch"
    finally:
        rig.close()


def test_executor_refuses_an_unreadable_pending_file(tmp_path: Path) -> None:
    rig = Rig(tmp_path, None, mode="dry-run")
    try:
        path = pending_latches.path_in(rig.cfg.data_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{not json")
        rig.start_bus()
        rig.start_executor(wait_ready=False)
        assert rig.wait_exit() == 2
        log = (tmp_path / "logs" / "executor.log").read_text()
        assert "pending-latches.json" in log and "ERROR_FATAL" in log
    finally:
        rig.close()


def test_give_up_on_the_executor_keeps_the_kill_switch_pending(make_pipeline) -> None:
    p = make_pipeline(
        {"supervisor": {"intensity_max_restarts": 2, "intensity_window_s": 30.0,
                        "backoff_initial_s": 0.05, "backoff_max_s": 0.2}},
        env={"BTCBOT_TEST_FAIL_AT_START": "executor"},
    )
    assert p.cli("start", "--detach").returncode == 1
    doc = wait_for(lambda: (d := p.status()) and d["latch"]["pending_persist"].get(
        "kill_switch") and d, timeout=30, what="kill switch pending-persist")
    assert doc["latch"]["pending_persist"]["kill_switch"]["value"] is True
    assert "gate:kill_switch (pending-persist)" in doc["trading"]["reasons"]
    assert doc["trading"]["state"] == "HALTED"
    items = pending_latches.load(pending_latches.path_in(p.config.parent / "data"))
    assert items and items[-1].latch == "kill_switch" and "giving up" in items[-1].reason
    r = p.cli("kill-switch", "off", "--reason", "operator")
    assert r.returncode == 0 and "pending-persist" in r.stdout
    assert p.status()["latch"]["pending_persist"]["kill_switch"]["value"] is False
