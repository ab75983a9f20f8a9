"""Disk and DB faults fail closed and say so (real executor processes):
- data/ remembers its DB (``<db>-id`` marker): a DB that went missing or empty, or a
  different DB, is refused at start with exit 2 and a message naming the file and the way
  to reset; ``paper reset`` archives the marker with the DB;
- ENOSPC / EIO on a DB write (injected through the DB's VFS) halt trading with reason
  "disk"; the executor stays up and its command socket answers."""

from __future__ import annotations

import time
from pathlib import Path

from actors.executor.dbmarker import marker_path
from bus.messages import OrderAck
from bus.transport import RequestFailed
from tests.executor_harness import Rig, order
from tests.helpers import wait_for


def _log(tmp_path: Path) -> str:
    return (tmp_path / "logs" / "executor.log").read_text()


def test_marker_written_then_missing_or_empty_db_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, None, mode="dry-run")
    db = rig.cfg.path(rig.cfg.executor.db_path)
    try:
        rig.start_bus()
        rig.start_executor()
        marker = marker_path(db)
        assert marker.exists() and len(marker.read_text().strip()) == 32
        assert oct(marker.stat().st_mode & 0o777) == "0o600"
        rig.procs["executor"].terminate()
        assert rig.wait_exit() == 0
        rig.start_executor()  # the same DB again: fine
        rig.procs["executor"].terminate()
        assert rig.wait_exit() == 0
        for side in ("", "-wal", "-shm"):
            Path(str(db) + side).unlink(missing_ok=True)
        db.write_bytes(b"")  # a 0-byte DB, as a full disk or a bad copy leaves it
        rig.start_executor(wait_ready=False)
        assert rig.wait_exit() == 2
        log = _log(tmp_path)
        assert "empty (0 bytes)" in log and str(db) in log and "paper reset" in log
        db.unlink()
        rig.start_executor(wait_ready=False)
        assert rig.wait_exit() == 2
        assert "is missing" in _log(tmp_path)
        assert not db.exists() or db.stat().st_size == 0  # never silently recreated
    finally:
        rig.close()


def test_enospc_on_a_db_write_halts_with_reason_disk(tmp_path: Path) -> None:
    trigger = tmp_path / "disk-fault"
    rig = Rig(tmp_path, None, mode="dry-run")
    try:
        rig.start_bus()
        rig.spawn("actors.executor", "executor", {"BTCBOT_TEST_DB_FAULT": str(trigger),
                                                  "BTCBOT_TEST_CRASH_AT": ""})
        rig.wait_ready()
        ok = rig.submit(order("BTCTRY-buy-disk-0"))
        assert isinstance(ok, OrderAck) and ok.status == "accepted"
        trigger.write_text("enospc")
        # Either this reservation is the write that meets the full disk (the request
        # fails naming it), or a background write of the executor met it first and the
        # halt is already in force (the order is refused for "disk"): both fail closed.
        try:
            reply = rig.submit(order("BTCTRY-buy-disk-1"))
        except RequestFailed as exc:
            assert "disk" in str(exc)
        else:
            assert isinstance(reply, OrderAck) and reply.status == "rejected", reply
            assert reply.reason == "disk", reply
        trigger.unlink()  # the disk is back, but the halt stays until a restart
        refused = rig.submit(order("BTCTRY-buy-disk-2"))
        assert isinstance(refused, OrderAck) and refused.status == "rejected"
        assert refused.reason == "disk"
        time.sleep(0.5)
        assert rig.procs["executor"].poll() is None
        assert rig.snapshot() is not None  # still answering
        wait_for(lambda: "halt disk" in _log(tmp_path), timeout=5, what="halt in FSM log")
    finally:
        rig.close()


def test_eio_in_a_background_write_halts_too(tmp_path: Path) -> None:
    trigger = tmp_path / "disk-fault"
    rig = Rig(tmp_path, None, mode="dry-run")
    try:
        rig.start_bus()
        rig.spawn("actors.executor", "executor", {"BTCBOT_TEST_DB_FAULT": str(trigger),
                                                  "BTCBOT_TEST_CRASH_AT": ""})
        rig.wait_ready()
        trigger.write_text("eio")
        # The prune/checkpoint loops write on their own; a reservation certainly does.
        try:
            rig.submit(order("BTCTRY-buy-eio-1"))
        except RequestFailed:
            pass
        trigger.unlink()
        ack = rig.submit(order("BTCTRY-buy-eio-2"))
        assert isinstance(ack, OrderAck) and ack.reason == "disk"
        assert "IOError" in _log(tmp_path) or "injected EIO" in _log(tmp_path)
        assert rig.procs["executor"].poll() is None
    finally:
        rig.close()
