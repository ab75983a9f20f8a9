"""Executor pure parts and DB: accounting, dry-run fills, drift diff, schema, lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.executor.accounting import FillFact, PositionState, apply_fill, replay
from actors.executor.db import MIGRATIONS, ExecutorDB, FillRow, LockHeld, OrderRow, acquire_lock
from actors.executor.recovery import (
    DriftRun,
    diff_open_orders,
    drift_latches,
    drift_runs,
    order_state,
    ttl_expired,
)
from actors.executor.venues.dryrun import crossing_fill
from shared.btcturk.models import ExchangeOrder

REPO = Path(__file__).resolve().parent.parent


# --- accounting ---------------------------------------------------------------------------

def test_avg_cost_and_realised_pnl_with_fees() -> None:
    p = apply_fill(PositionState(), "buy", D("100"), D("2"), D("0.2"))
    p = apply_fill(p, "buy", D("130"), D("1"), D("0.13"))
    assert p.quantity == 3 and p.avg_cost == D("110")
    p = apply_fill(p, "sell", D("120"), D("2"), D("0.24"))
    assert p.quantity == 1 and p.avg_cost == D("110")  # avg unchanged by a reduction
    assert p.fees == D("0.57")
    assert p.realized_pnl == D("20")  # (120-110)*2, gross: fees are counted apart
    p = apply_fill(p, "sell", D("100"), D("1"))
    assert p.quantity == 0 and p.avg_cost == 0 and p.realized_pnl == D("10")
    assert p.fees == D("0.57")


def test_crossing_zero_opens_the_rest_at_fill_price() -> None:
    p = apply_fill(PositionState(), "buy", D("10"), D("1"))
    p = apply_fill(p, "sell", D("12"), D("3"))
    assert p.quantity == D("-2") and p.avg_cost == D("12") and p.realized_pnl == D("2")
    p = apply_fill(p, "buy", D("11"), D("2"))
    assert p.quantity == 0 and p.realized_pnl == D("4")


def test_bad_fill_refused() -> None:
    with pytest.raises(ValueError):
        apply_fill(PositionState(), "hold", D(1), D(1))
    with pytest.raises(ValueError):
        apply_fill(PositionState(), "buy", D(1), D(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["buy", "sell"]),
                          st.integers(1, 1000), st.integers(1, 50)), max_size=30))
def test_round_trip_pnl_is_cash_flow(trades: list[tuple[str, int, int]]) -> None:
    """Closing everything at the end, realised PnL equals the net cash flow."""
    fills = [FillFact("X", s, D(p), D(q), D(0)) for s, p, q in trades]
    pos = replay(fills).get("X", PositionState())
    if pos.quantity:
        fills.append(FillFact("X", "sell" if pos.quantity > 0 else "buy", D(500),
                              abs(pos.quantity), D(0)))
    final = replay(fills).get("X", PositionState())
    cash = sum((-f.price * f.quantity if f.side == "buy" else f.price * f.quantity)
               for f in fills)
    assert final.quantity == 0
    assert final.realized_pnl == cash


# --- dry-run ------------------------------------------------------------------------------

def test_dry_run_fills_only_when_crossed() -> None:
    asks = [(D("101"), D("1")), (D("102"), D("5"))]
    bids = [(D("99"), D("1"))]
    assert crossing_fill("buy", D("100"), D("1"), bids, asks, D("10")) is None
    f = crossing_fill("buy", D("101.5"), D("3"), bids, asks, D("10"))
    assert f is not None and f.quantity == D("1") and f.price == D("101.5")
    assert f.fee == D("101.5") * D("1") * D("0.001")
    f = crossing_fill("sell", D("98"), D("3"), bids, asks, D("0"))
    assert f is not None and f.quantity == D("1")


# --- drift --------------------------------------------------------------------------------

def _row(cid: str, state: str = "OPEN", oid: int | None = 1, filled: str = "0",
         created: float = 0.0, ttl: float = 0.0) -> OrderRow:
    return OrderRow(cid, "i", "paper", "BTCTRY", "buy", "limit", D("100"), D("1"), D(filled),
                    state, oid, ttl, "", False, created, created)


def _eo(cid: str, oid: int, status: str = "Untouched", left: str = "1") -> ExchangeOrder:
    return ExchangeOrder(oid, cid, "BTCTRY", "buy", "limit", D("100"), D("1"), D(left),
                         status, 0, 0)


def test_order_state_mapping() -> None:
    assert order_state("Untouched", D(1), D(1)) == "OPEN"
    assert order_state("Partial", D(1), D("0.5")) == "PARTIAL"
    assert order_state("Closed", D(1), D(0)) == "FILLED"
    assert order_state("Canceled", D(1), D("0.5")) == "CANCELED"
    assert order_state("Weird", D(1), D(1)) == "UNKNOWN"


def test_diff_finds_orphans_updates_and_missing() -> None:
    db_open = [_row("bb-a", oid=1), _row("bb-b", oid=2), _row("bb-c", oid=None, state="PENDING")]
    failed = _row("bb-late", state="FAILED", oid=None)
    by_cid = {r.client_order_id: r for r in [*db_open, failed]}
    exch = [_eo("bb-a", 1), _eo("bb-b", 2, "Partial", "0.4"), _eo("bb-x", 9),
            _eo("other-1", 10), _eo("bb-late", 11)]
    drifts = {d.client_order_id: d for d in diff_open_orders(db_open, by_cid, exch, "bb")}
    assert set(drifts) == {"bb-b", "bb-x", "bb-late"}
    assert drifts["bb-x"].kind == "orphan"
    assert drifts["bb-b"].kind == "update" and drifts["bb-b"].new_filled == D("0.6")
    assert drifts["bb-late"].kind == "update" and drifts["bb-late"].new_state == "OPEN"
    gone = diff_open_orders(db_open, by_cid, [], "bb", in_resolution=frozenset({"bb-b"}))
    assert [(d.kind, d.client_order_id) for d in gone] == [("missing", "bb-a")]


def test_ttl_uses_order_ttl_then_default() -> None:
    rows = [_row("a", created=0, ttl=5), _row("b", created=0), _row("c", created=99, ttl=5)]
    assert [r.client_order_id for r in ttl_expired(rows, 10.0, 120.0)] == ["a"]
    assert [r.client_order_id for r in ttl_expired(rows, 200.0, 120.0)] == ["a", "b", "c"]


# --- DB -----------------------------------------------------------------------------------

def test_migrations_from_empty_and_idempotent(tmp_path: Path) -> None:
    db = ExecutorDB(tmp_path / "x.db")
    assert db.version() == len(MIGRATIONS)
    tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"idempotency_keys", "orders", "fills", "positions", "balances", "latches",
            "schema_version"} <= tables
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.synchronous == "FULL"
    db.close()
    again = ExecutorDB(tmp_path / "x.db")
    assert again.version() == len(MIGRATIONS)
    assert again.conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(
        MIGRATIONS)


class _SyncCountingVFS(apsw.VFS):
    """The default VFS, counting fsyncs per file name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.synced: list[str] = []
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return _CountingFile(self.synced, name, flags)


class _CountingFile(apsw.VFSFile):
    def __init__(self, synced: list[str], name: Any, flags: list[int]) -> None:
        self.synced = synced
        self.name = name.filename() if hasattr(name, "filename") else str(name)
        super().__init__("", name, flags)

    def xSync(self, flags: int) -> None:
        self.synced.append(self.name)
        super().xSync(flags)


@pytest.mark.parametrize("grade", ["FULL", "NORMAL"])
def test_only_reservations_and_latches_are_fsynced(tmp_path: Path, grade: str) -> None:
    """The durable grade (db.py's doc): a reservation and a latch reach the disk before
    the call returns under FULL; what follows a send is WAL-NORMAL (no fsync)."""
    vfs = _SyncCountingVFS(f"count-{grade}")
    db = ExecutorDB(tmp_path / "x.db", synchronous=grade, vfs=vfs.name)
    row = _row("c1", state="PENDING", oid=None)

    def fsyncs(write: Callable[[], object]) -> int:
        vfs.synced.clear()
        write()
        return sum(name.endswith("-wal") for name in vfs.synced)

    durable = 1 if grade == "FULL" else 0
    assert fsyncs(lambda: db.reserve_order(row, retention_s=60)) == durable
    assert fsyncs(lambda: db.reserve_key("cancel", "c1", "paper", 1.0, 60)) == durable
    assert fsyncs(lambda: db.set_latch("kill_switch", True, "test")) == durable
    assert fsyncs(lambda: db.update_key("submit", "c1", status="COMMITTED", attempts=1,
                                        probes=0, next_probe_at=0, settle_from=0,
                                        exchange_order_id=7, reason="", now=2.0,
                                        order_update={"state": "OPEN"})) == 0
    assert fsyncs(lambda: db.update_order("c1", 3.0, state="FILLED")) == 0
    assert fsyncs(lambda: db.set_balances("paper", [("TRY", D(1), D(0))], 3.0)) == 0
    # The grade is per commit: the connection is back to NORMAL after a durable one.
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    db.close()
    vfs.unregister()


def test_newer_schema_refused(tmp_path: Path) -> None:
    db = ExecutorDB(tmp_path / "x.db")
    db.conn.execute("INSERT INTO schema_version VALUES (999)")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        ExecutorDB(tmp_path / "x.db")


def test_reserve_is_unique_and_fill_dedupes(tmp_path: Path) -> None:
    import apsw
    db = ExecutorDB(tmp_path / "x.db")
    row = _row("bb-1", state="PENDING", oid=None, created=time.time())
    db.reserve_order(row, retention_s=10)
    with pytest.raises(apsw.ConstraintError):
        db.reserve_order(row, retention_s=10)
    assert db.get_key("submit", "bb-1").status == "PENDING"
    f = FillRow("t1", 5, "bb-1", "BTCTRY", "buy", D("100"), D("1"), D("0.1"), "TRY", 1)
    pos = apply_fill(PositionState(), "buy", D("100"), D("1"), D("0.1"))
    assert db.insert_fill(f, "paper", pos, 0.0)
    assert not db.insert_fill(f, "paper", apply_fill(pos, "buy", D(1), D(1)), 0.0)
    assert db.positions("paper")["BTCTRY"].quantity == 1
    # realised PnL is gross in memory and NET in the column (its meaning since v1), so a
    # database written by an older executor reads right: a round trip is exact
    closed = apply_fill(pos, "sell", D("103"), D("1"), D("0.103"))
    f2 = FillRow("t2", 6, "bb-1", "BTCTRY", "sell", D("103"), D("1"), D("0.103"), "TRY", 2)
    assert db.insert_fill(f2, "paper", closed, 0.0)
    assert db.positions("paper")["BTCTRY"] == closed and closed.realized_pnl == D(3)
    stored = db.conn.execute("SELECT realized_pnl FROM positions").fetchone()[0]
    assert D(stored) == D(3) - D("0.203")
    db.set_latch("safety_latch", True, "why")
    db.close()
    assert ExecutorDB(tmp_path / "x.db").latches()["safety_latch"] == (True, "why")


def test_prune_keeps_keys_of_open_orders(tmp_path: Path) -> None:
    db = ExecutorDB(tmp_path / "x.db")
    for cid, state in (("bb-open", "OPEN"), ("bb-done", "FILLED")):
        db.reserve_order(_row(cid, state="PENDING", oid=None, created=0.0), retention_s=1)
        db.update_key("submit", cid, status="COMMITTED", attempts=1, probes=0, next_probe_at=0,
                      settle_from=0, exchange_order_id=None, reason="", now=0.0,
                      order_update={"state": state})
    assert db.prune_keys(now=100.0) == 1
    assert db.get_key("submit", "bb-open") is not None and db.get_key("submit", "bb-done") is None


def test_lock_is_exclusive(tmp_path: Path) -> None:
    fd = acquire_lock(tmp_path / "d" / "x.db")
    try:
        with pytest.raises(LockHeld):
            acquire_lock(tmp_path / "d" / "x.db")
        assert oct((tmp_path / "d").stat().st_mode & 0o777) == "0o700"
    finally:
        os.close(fd)
    os.close(acquire_lock(tmp_path / "d" / "x.db"))  # released with the fd


def test_second_executor_exits_3(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'mode = "dry-run"\nruntime_dir = "{tmp_path}/run"\nlog_dir = '
                   f'"{tmp_path}/logs"\n[executor]\ndb_path = "{tmp_path}/data/x.db"\n')
    fd = acquire_lock(tmp_path / "data" / "x.db")
    try:
        r = subprocess.run([sys.executable, "-m", "actors.executor", "--config", str(cfg)],
                           cwd=REPO, capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
    assert r.returncode == 3, r.stderr
    assert "locked" in r.stderr


def test_wal_is_checkpointed_only_when_the_executor_asks(tmp_path: Path) -> None:
    """No automatic checkpoint inside a commit (a reservation would pay for it): the WAL
    grows past SQLite's 1,000-page default until checkpoint() copies all of it."""
    db = ExecutorDB(tmp_path / "ckpt.db", synchronous="NORMAL")
    assert db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(400):
        db.reserve_order(_row(f"c{i}", state="PENDING", oid=None), retention_s=60)
    in_wal, copied = db.checkpoint()
    assert in_wal > 1000 and copied == in_wal
    db.reserve_order(_row("after", state="PENDING", oid=None), retention_s=60)
    assert db.checkpoint()[0] < 20  # the next writer started the WAL over
    db.close()
    assert db.checkpoint() == (0, 0)  # after close: nothing, and no error


def test_checkpoints_on_a_thread_beside_the_writer_lose_nothing(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "ckpt.db"
    db = ExecutorDB(path)
    stop = threading.Event()
    done: list[tuple[int, int]] = []

    def checkpointer() -> None:
        while not stop.is_set():
            done.append(db.checkpoint())

    t = threading.Thread(target=checkpointer)
    t.start()
    try:
        for i in range(300):
            db.reserve_order(_row(f"c{i}", state="PENDING", oid=None), retention_s=60)
    finally:
        stop.set()
        t.join()
    assert len(done) > 1 and any(copied for _, copied in done)
    db.close()
    again = ExecutorDB(path)
    assert again.key_counts()["PENDING"] == 300
    again.close()


def test_latch_set_time_is_the_first_set_and_survives_a_reopen(tmp_path: Path) -> None:
    db = ExecutorDB(tmp_path / "x.db")
    assert db.latch_set_times() == {}
    db.set_latch("paused", True, "first", now=100.0)
    db.set_latch("paused", True, "again", now=200.0)  # a repeated pause keeps the first time
    db.set_latch("kill_switch", True, "k", now=150.0)
    assert db.latch_set_times() == {"paused": 100.0, "kill_switch": 150.0}
    assert db.latches()["paused"] == (True, "again")
    db.set_latch("kill_switch", False, "off", now=300.0)  # cleared: no set time
    db.close()
    again = ExecutorDB(tmp_path / "x.db")
    assert again.latch_set_times() == {"paused": 100.0}
    again.set_latch("kill_switch", True, "k2", now=400.0)  # set anew: its new time
    assert again.latch_set_times() == {"paused": 100.0, "kill_switch": 400.0}


def test_v4_database_gets_latch_set_times_from_updated_at(tmp_path: Path) -> None:
    """A DB made before the set time existed: a latch that holds was set no later than
    its last update, which is the best the old schema knows."""
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, sql in enumerate(MIGRATIONS[:4], start=1):
        conn.execute(sql)
        conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
    conn.execute("INSERT INTO latches(name, value, reason, updated_at) VALUES "
                 "('paused', 1, 'old', 42.0), ('kill_switch', 0, 'was', 43.0)")
    conn.close()
    db = ExecutorDB(path)
    assert db.version() == len(MIGRATIONS)
    assert db.latch_set_times() == {"paused": 42.0}


def test_balances_are_written_and_announced_only_when_they_change() -> None:
    """The liveness read fetches balances every 2 s between slow polls: the same answer
    again is neither rewritten nor announced (a portfolio snapshot for strategy and risk);
    a change is; a write that failed (full disk) is tried again at the next read."""
    import asyncio as _asyncio
    from types import SimpleNamespace

    from actors.executor.sync import Sync

    answers = [[("TRY", D(100), D(0))]] * 2 + [[("TRY", D(90), D(10))]] * 3
    writes: list[object] = []
    failing = {"now": False}

    class FakeDB:
        def set_balances(self, mode: str, balances: object, now: float) -> None:
            if failing["now"]:
                raise OSError("disk full")
            writes.append(balances)

    class FakeVenue:
        async def balances(self) -> object:
            return answers.pop(0)

    s = SimpleNamespace(venue=FakeVenue(), db=FakeDB(), mode="paper", now=lambda: 1.0,
                        mono=lambda: 1.0, dirty=False)
    sync = Sync(s, None, None, None, None)  # type: ignore[arg-type]
    run = _asyncio.run
    run(sync.fetch_balances())
    assert writes == [[("TRY", D(100), D(0))]] and s.dirty
    s.dirty = False
    run(sync.fetch_balances())
    assert len(writes) == 1 and not s.dirty
    failing["now"] = True
    with pytest.raises(OSError):
        run(sync.fetch_balances())
    failing["now"] = False
    run(sync.fetch_balances())  # the same as the failed one: written now
    assert writes[-1] == [("TRY", D(90), D(10))] and len(writes) == 2 and s.dirty
    s.dirty = False
    run(sync.fetch_balances())
    assert len(writes) == 2 and not s.dirty


# --- balance drift runs (recovery.drift_runs, drift_latches) ----------------------------
def _runs_over(observations: list[tuple[set[str], bool]]) -> list[dict[str, DriftRun]]:
    runs: dict[str, DriftRun] = {}
    out = []
    for t, (drifting, settled) in enumerate(observations):
        runs = drift_runs(runs, {a: D(1) for a in drifting}, settled=settled, now=float(t))
        out.append(runs)
    return out


@given(st.lists(st.tuples(st.sets(st.sampled_from(["BTC", "ETH"])), st.booleans()),
                max_size=12))
def test_unsettled_rounds_neither_count_nor_end_a_run(rounds: list[tuple[set[str], bool]]
                                                      ) -> None:
    """A round in which a fill landed between the trades and the balances proves
    nothing: the counts are those of the settled rounds alone, in a row."""
    def counts(runs: dict[str, DriftRun]) -> dict[str, int]:
        return {a: r.count for a, r in runs.items()}
    settled_only = [(d, True) for d, ok in rounds if ok]
    expected = counts(_runs_over(settled_only)[-1]) if settled_only else {}
    assert (counts(_runs_over(rounds)[-1]) if rounds else {}) == expected


def test_settled_rounds_count_drift_in_a_row_and_a_clean_round_ends_it() -> None:
    runs = _runs_over([({"BTC"}, True), ({"BTC"}, False), ({"BTC"}, True), (set(), True),
                       ({"BTC"}, True)])
    assert [r["BTC"].count if "BTC" in r else 0 for r in runs] == [1, 1, 2, 0, 1]
    assert runs[2]["BTC"].since == 0.0 and runs[4]["BTC"].since == 4.0


def test_a_drift_latches_after_n_reconciles_and_the_minimum_time_both() -> None:
    runs = {"BTC": DriftRun(3, since=100.0), "ETH": DriftRun(2, since=0.0)}
    # three reconciles in 10 s (a burst after bus gaps): not yet
    assert drift_latches(runs, now=110.0, reconciles=3, min_s=60.0) == []
    assert drift_latches(runs, now=160.0, reconciles=3, min_s=60.0) == ["BTC"]
    # ETH stood long enough but on two reconciles only
    assert drift_latches(runs, now=1000.0, reconciles=3, min_s=60.0) == ["BTC"]
    assert drift_latches(runs, now=100.0, reconciles=2, min_s=0.0) == ["BTC", "ETH"]
