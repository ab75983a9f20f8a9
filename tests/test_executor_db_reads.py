"""The executor DB's repeated reads (open orders, positions, balances, key counts) are
answered from the last result while the database is unchanged: after any sequence of
writes, committed, rolled back or still inside a transaction, a cached read equals a
fresh query; an unchanged database is not queried again."""

from __future__ import annotations

import tempfile
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import apsw
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.executor.db import NON_TERMINAL_ORDER_STATES, ExecutorDB, FillRow, OrderRow
from shared.pnl import PositionState

SYMBOLS = ("BTCTRY", "ETHTRY")


def _order(i: int, symbol: str) -> OrderRow:
    return OrderRow(f"bb-{i}", f"i-{i}", "paper", symbol, "buy", "limit", D("100"), D("1"),
                    D("0"), "PENDING", None, 0.0, "", False, float(i), float(i))


def fresh(db: ExecutorDB) -> dict[str, Any]:
    """Every cached read, straight from SQL."""
    return {
        "keys": db._key_counts(),
        "balances": db._balances("paper"),
        "positions": db._positions("paper"),
        **{f"open {s}": db._orders_in_states("paper", NON_TERMINAL_ORDER_STATES, s)
           for s in ("", *SYMBOLS)},
    }


def cached(db: ExecutorDB) -> dict[str, Any]:
    return {
        "keys": db.key_counts(),
        "balances": db.balances("paper"),
        "positions": db.positions("paper"),
        **{f"open {s}": db.open_orders("paper", s) for s in ("", *SYMBOLS)},
    }


def apply(db: ExecutorDB, op: tuple[str, int], n: int) -> None:
    kind, i = op
    symbol = SYMBOLS[i % 2]
    open_ = db._orders_in_states("paper", NON_TERMINAL_ORDER_STATES, "")
    if kind == "reserve":
        db.reserve_order(_order(n, symbol), retention_s=60.0)
    elif kind == "state" and open_:
        row = open_[i % len(open_)]
        db.update_order(row.client_order_id, float(n),
                        state=("OPEN", "FILLED", "CANCELED")[i % 3])
    elif kind == "key" and open_:
        row = open_[i % len(open_)]
        key = db.get_key("submit", row.client_order_id)
        if key is not None:
            db.update_key("submit", row.client_order_id, status="COMMITTED", attempts=1,
                          probes=0, next_probe_at=0.0, settle_from=0.0,
                          exchange_order_id=n, reason="", now=float(n),
                          order_update={"state": "OPEN", "exchange_order_id": n})
    elif kind == "fill":
        pos = db._positions("paper").get(symbol, PositionState())
        db.insert_fill(FillRow(f"t{n}", n, f"bb-{n}", symbol, "buy", D("100"), D("0.5"),
                               D("0.01"), "TRY", n), "paper",
                       PositionState(pos.quantity + D("0.5"), pos.cost + D("50"),
                                     pos.realized_pnl, pos.fees + D("0.01")), float(n))
    elif kind == "balances":
        db.set_balances("paper", [("TRY", D(1000 - n), D(n)), ("BTC", D(i), D(0))], float(n))
    elif kind == "rollback":
        try:
            with db.conn:
                db.set_balances("paper", [("TRY", D(-1), D(-1))], float(n))
                assert cached(db) == fresh(db)  # inside the transaction: the new rows
                raise RuntimeError("roll back")
        except RuntimeError:
            pass


OPS = st.lists(st.tuples(st.sampled_from(
    ["reserve", "state", "key", "fill", "balances", "rollback", "read"]),
    st.integers(0, 50)), max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_cached_reads_equal_fresh_ones_after_any_writes(ops: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = ExecutorDB(Path(tmp) / "x.db", synchronous="NORMAL")
        try:
            for n, op in enumerate(ops, start=1):
                apply(db, op, n)
                assert cached(db) == fresh(db), f"after {op}"
        finally:
            db.close()


def test_an_unchanged_database_is_not_queried_again(tmp_path: Path) -> None:
    db = ExecutorDB(tmp_path / "x.db", synchronous="NORMAL")
    db.reserve_order(_order(1, "BTCTRY"), retention_s=60.0)
    statements: list[str] = []

    def trace(_cursor: Any, sql: str, _bindings: Any) -> bool:
        statements.append(sql)
        return True

    db.conn.exec_trace = trace
    first = cached(db)
    queried = len(statements)
    assert queried >= 4
    assert cached(db) == first and len(statements) == queried
    db.update_order("bb-1", 2.0, state="OPEN")
    after = cached(db)
    assert after["open "][0].state == "OPEN" and len(statements) > queried + 1
    db.close()


def test_callers_may_change_what_they_get(tmp_path: Path) -> None:
    db = ExecutorDB(tmp_path / "x.db", synchronous="NORMAL")
    db.reserve_order(_order(1, "BTCTRY"), retention_s=60.0)
    db.open_orders("paper").clear()
    db.key_counts()["PENDING"] = 99
    db.positions("paper")["X"] = PositionState()
    db.balances("paper").append(("X", D(1), D(0)))
    assert cached(db) == fresh(db)
    db.close()


def test_a_commit_by_another_connection_is_seen_once_read(tmp_path: Path) -> None:
    """Not how the executor runs (it is the one writer), but the key covers it: the
    file's data_version moves when this connection next reads."""
    db = ExecutorDB(tmp_path / "x.db", synchronous="NORMAL")
    assert db.balances("paper") == []
    other = apsw.Connection(str(tmp_path / "x.db"))
    other.execute("INSERT INTO balances(asset, mode, free, locked, updated_at) "
                  "VALUES ('TRY', 'paper', '5', '0', 1)")
    db.conn.execute("SELECT 1 FROM orders LIMIT 1").fetchall()  # any read
    assert db.balances("paper") == [("TRY", D(5), D(0))]
    other.close()
    db.close()
