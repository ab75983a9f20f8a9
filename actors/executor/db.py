"""The executor's database (apsw, WAL, one file) and its single-instance lock.

Durability comes in two grades, because an fsync costs ~0.3 ms on the hot path:

- Reservations (the key that precedes every send) and latches are *durable*: with
  ``synchronous=FULL`` (the default) their commit is fsynced, so it survives a power
  loss, not only a process crash. Without it an order could be on the exchange with no
  key at all after a power loss (the orphan scan would adopt it, but the intent could be
  decided and sent again under a new request first).
- Everything after a send (key outcomes, order states, fills, balances, adoptions) is
  committed with WAL ``synchronous=NORMAL``: it survives a SIGKILL of the executor, and
  on a power loss only a suffix of it can be lost, which recovery rebuilds from the
  exchange (a reserved key that is not terminal is probed by client id; fills are
  re-imported by trade id; open orders are reconciled). In WAL mode a later fsynced
  commit also hardens every earlier one, so nothing is lost out of order.

``db_synchronous=NORMAL`` (benchmarks only) makes the durable grade NORMAL too.

Every write that must be atomic (key + order row, fill + position) is one transaction.
Decimals are stored as TEXT (exact); times as REAL unix seconds.

The reads that snapshots, heartbeats and every poll repeat (open orders, positions,
balances, key counts) are answered from the last result while the database has not
changed: ``_cached`` keys them on SQLite's own change counters (this connection's
``total_changes``, which moves with every row written, also inside a transaction that is
then rolled back, and the file's ``data_version``, which moves on every commit), and
keeps nothing read inside an open transaction. The executor is the database's one
writer while it runs (its lock), so nothing else can change it between two reads.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import apsw

from actors.executor.accounting import PositionState
from shared.files import ensure_private_dir

T = TypeVar("T")
READ_CACHE_MAX = 256  # cached read results kept (keys: query, mode, states, symbol)

# Each entry migrates from version i to i+1; never edit a released entry, append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE idempotency_keys (
        action_type TEXT NOT NULL,
        key TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('PENDING','COMMITTED','UNKNOWN','FAILED')),
        mode TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        probes INTEGER NOT NULL DEFAULT 0,
        next_probe_at REAL NOT NULL DEFAULT 0,
        settle_from REAL NOT NULL DEFAULT 0,
        exchange_order_id INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (action_type, key)
    );
    CREATE INDEX idx_keys_status ON idempotency_keys(status);
    CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY,
        intent_id TEXT NOT NULL,
        mode TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL CHECK (side IN ('buy','sell')),
        order_type TEXT NOT NULL,
        price TEXT NOT NULL,
        quantity TEXT NOT NULL,
        filled_quantity TEXT NOT NULL DEFAULT '0',
        state TEXT NOT NULL,
        exchange_order_id INTEGER UNIQUE,
        ttl_s REAL NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        adopted INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX idx_orders_state ON orders(state);
    CREATE TABLE fills (
        trade_id TEXT PRIMARY KEY,
        exchange_order_id INTEGER NOT NULL,
        client_order_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        quantity TEXT NOT NULL,
        fee TEXT NOT NULL,
        fee_asset TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        mode TEXT NOT NULL,
        imported_at REAL NOT NULL
    );
    CREATE TABLE positions (
        symbol TEXT NOT NULL,
        mode TEXT NOT NULL,
        quantity TEXT NOT NULL,
        cost_basis TEXT NOT NULL,
        realized_pnl TEXT NOT NULL,
        fees TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (symbol, mode)
    );
    CREATE TABLE balances (
        asset TEXT NOT NULL,
        mode TEXT NOT NULL,
        free TEXT NOT NULL,
        locked TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (asset, mode)
    );
    CREATE TABLE latches (
        name TEXT PRIMARY KEY CHECK (name IN ('kill_switch','safety_latch','paused')),
        value INTEGER NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL
    );
    """,
    # v2: preflight reports stored with each live arming decision (armed or refused),
    # written by `start --mode live` under this DB's lock before any executor runs.
    """
    CREATE TABLE arming_records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        mode TEXT NOT NULL,
        armed INTEGER NOT NULL,
        report TEXT NOT NULL
    );
    """,
    # v3: incidents (surprising venue data recorded instead of crashing on it) and the
    # operator's resolutions of orders the executor could not settle itself (VANISHED).
    """
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        symbol TEXT NOT NULL DEFAULT '',
        client_order_id TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL,
        latch TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE order_resolutions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        client_order_id TEXT NOT NULL,
        old_state TEXT NOT NULL,
        new_state TEXT NOT NULL,
        reason TEXT NOT NULL,
        operator TEXT NOT NULL DEFAULT ''
    );
    """,
    # v4: the DB's identity, mirrored in a marker file beside it (dbmarker.py), so that
    # a DB that went missing or empty is refused instead of silently recreated.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # v5: when each latch became set (updated_at moves with every write, a repeated
    # "pause" included; the operator wants to know since when trading has been held).
    """
    ALTER TABLE latches ADD COLUMN set_at REAL NOT NULL DEFAULT 0;
    UPDATE latches SET set_at = updated_at WHERE value = 1;
    """,
]

LATCH_NAMES = ("kill_switch", "safety_latch", "paused")
NON_TERMINAL_ORDER_STATES = ("PENDING", "SUBMITTED", "OPEN", "PARTIAL", "UNKNOWN")


class LockHeld(Exception):
    pass


def acquire_lock(db_path: Path) -> int:
    """flock(LOCK_EX|LOCK_NB) on ``<db>.lock``; returns the fd to keep open for life.
    The kernel drops the lock when the process dies (also on SIGKILL)."""
    ensure_private_dir(db_path.parent)
    lock_path = str(db_path) + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockHeld(f"database {db_path} is locked by another executor ({lock_path})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@dataclass(frozen=True, slots=True)
class KeyRow:
    action_type: str
    key: str
    status: str
    mode: str
    attempts: int
    probes: int
    next_probe_at: float
    settle_from: float
    exchange_order_id: int | None
    reason: str
    created_at: float
    updated_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class OrderRow:
    client_order_id: str
    intent_id: str
    mode: str
    symbol: str
    side: str
    order_type: str
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal
    state: str
    exchange_order_id: int | None
    ttl_s: float
    reason: str
    adopted: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class FillRow:
    trade_id: str
    exchange_order_id: int
    client_order_id: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: str
    ts_ms: int


_KEY_COLS = ("action_type, key, status, mode, attempts, probes, next_probe_at, settle_from, "
             "exchange_order_id, reason, created_at, updated_at, expires_at")
_ORDER_COLS = ("client_order_id, intent_id, mode, symbol, side, order_type, price, quantity, "
               "filled_quantity, state, exchange_order_id, ttl_s, reason, adopted, created_at, "
               "updated_at")


def _order(row: tuple) -> OrderRow:
    (cid, iid, mode, sym, side, otype, price, qty, filled, state, oid, ttl, reason, adopted,
     created, updated) = row
    return OrderRow(cid, iid, mode, sym, side, otype, Decimal(price), Decimal(qty),
                    Decimal(filled), state, oid, ttl, reason, bool(adopted), created, updated)


class ExecutorDB:
    def __init__(self, path: Path, *, synchronous: str = "FULL", vfs: str | None = None) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = path
        self.conn = apsw.Connection(str(path), vfs=vfs)  # vfs: tests count fsyncs
        self._reads: dict[tuple[Any, ...], tuple[tuple[int, int], Any]] = {}
        os.chmod(path, 0o600)
        self.conn.setbusytimeout(5000)
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise RuntimeError(f"could not enable WAL on {path}: {mode}")
        self.synchronous = synchronous
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        # No automatic checkpoints: SQLite would run one (page copies and two fsyncs)
        # inside whichever commit crosses 1,000 WAL pages, a reservation between a
        # decision and its order. The owner calls checkpoint() from a worker thread.
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.migrate()
        self._ckpt_lock = threading.Lock()
        self._ckpt: apsw.Connection | None = apsw.Connection(str(path), vfs=vfs)
        # SQLite opens the file lazily; until a read it does not know the file is WAL,
        # and a checkpoint would report -1 and do nothing.
        self._ckpt.execute("SELECT count(*) FROM sqlite_master").fetchall()

    def checkpoint(self) -> tuple[int, int]:
        """Copy committed WAL frames into the database file, through a connection of
        its own, so that it can run on a worker thread beside the writer (in WAL mode a
        PASSIVE checkpoint neither waits for nor blocks it; apsw releases the GIL).
        Returns (frames in the WAL, frames checkpointed); (0, 0) once closed."""
        with self._ckpt_lock:
            if self._ckpt is None:
                return (0, 0)
            return self._ckpt.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)

    def _cached(self, key: tuple[Any, ...], query: Callable[[], T]) -> T:
        """``query()``, or its last result while the database is unchanged (module doc).
        Callers get the stored result itself: each cached method copies its container.
        Nothing read inside an open transaction is kept: a rollback would take its rows
        back without moving either counter."""
        if self.conn.in_transaction:
            return query()
        version = (self.conn.data_version(), self.conn.total_changes())
        hit = self._reads.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]  # type: ignore[no-any-return]
        value = query()
        if len(self._reads) >= READ_CACHE_MAX:
            self._reads.clear()
        self._reads[key] = (version, value)
        return value

    @contextmanager
    def _durable(self) -> Iterator[None]:
        """One transaction whose commit is fsynced (the module doc's durable grade)."""
        full = self.synchronous == "FULL"
        if full:
            self.conn.execute("PRAGMA synchronous=FULL")
        try:
            with self.conn:
                yield
        finally:
            if full:
                self.conn.execute("PRAGMA synchronous=NORMAL")

    # --- schema ---------------------------------------------------------------------
    def version(self) -> int:
        self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def migrate(self) -> int:
        current = self.version()
        if current > len(MIGRATIONS):
            raise RuntimeError(f"database schema v{current} is newer than this code "
                               f"(v{len(MIGRATIONS)})")
        for target in range(current + 1, len(MIGRATIONS) + 1):
            with self._durable():
                self.conn.execute(MIGRATIONS[target - 1])
                self.conn.execute("INSERT INTO schema_version(version) VALUES (?)", (target,))
        return self.version()

    def close(self) -> None:
        with self._ckpt_lock:  # waits for a checkpoint in flight on its thread
            if self._ckpt is not None:
                self._ckpt.close()
                self._ckpt = None
        self.conn.close()

    # --- keys -----------------------------------------------------------------------
    def get_key(self, action_type: str, key: str) -> KeyRow | None:
        row = self.conn.execute(
            f"SELECT {_KEY_COLS} FROM idempotency_keys WHERE action_type=? AND key=?",
            (action_type, key)).fetchone()
        return KeyRow(*row) if row else None

    def keys_with_status(self, *statuses: str) -> list[KeyRow]:
        marks = ",".join("?" * len(statuses))
        return [KeyRow(*r) for r in self.conn.execute(
            f"SELECT {_KEY_COLS} FROM idempotency_keys WHERE status IN ({marks}) "
            "ORDER BY created_at", statuses)]

    def key_counts(self) -> dict[str, int]:
        return dict(self._cached(("key_counts",), self._key_counts))

    def _key_counts(self) -> dict[str, int]:
        counts = {"PENDING": 0, "COMMITTED": 0, "UNKNOWN": 0, "FAILED": 0}
        for status, n in self.conn.execute(
                "SELECT status, count(*) FROM idempotency_keys GROUP BY status"):
            counts[status] = n
        return counts

    def reserve_order(self, order: OrderRow, *, retention_s: float) -> None:
        """Key PENDING + order row PENDING, one durable transaction. Raises
        apsw.ConstraintError if either exists already."""
        now = order.created_at
        with self._durable():
            self.conn.execute(
                "INSERT INTO idempotency_keys(action_type, key, status, mode, settle_from, "
                "next_probe_at, created_at, updated_at, expires_at) "
                "VALUES ('submit', ?, 'PENDING', ?, ?, ?, ?, ?, ?)",
                (order.client_order_id, order.mode, now, now, now, now, now + retention_s))
            self._insert_order(order)

    def reserve_key(self, action_type: str, key: str, mode: str, now: float,
                    retention_s: float) -> None:
        """A fresh PENDING key; an existing FAILED one is re-armed (cancels only)."""
        with self._durable():
            self.conn.execute(
                "INSERT INTO idempotency_keys(action_type, key, status, mode, settle_from, "
                "next_probe_at, created_at, updated_at, expires_at) "
                "VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(action_type, key) DO UPDATE SET status='PENDING', attempts=0, "
                "probes=0, reason='', settle_from=excluded.settle_from, "
                "updated_at=excluded.updated_at, expires_at=excluded.expires_at "
                "WHERE idempotency_keys.status='FAILED'",
                (action_type, key, mode, now, now, now, now, now + retention_s))

    def update_key(self, action_type: str, key: str, *, status: str, attempts: int,
                   probes: int, next_probe_at: float, settle_from: float,
                   exchange_order_id: int | None, reason: str, now: float,
                   order_update: dict | None = None) -> None:
        """Key transition, plus optionally the order row, atomically."""
        with self.conn:
            self.conn.execute(
                "UPDATE idempotency_keys SET status=?, attempts=?, probes=?, next_probe_at=?, "
                "settle_from=?, exchange_order_id=?, reason=?, updated_at=? "
                "WHERE action_type=? AND key=?",
                (status, attempts, probes, next_probe_at, settle_from, exchange_order_id,
                 reason[:500], now, action_type, key))
            if order_update:
                self._update_order(key, now, **order_update)

    def insert_adopted(self, order: OrderRow, retention_s: float) -> None:
        """An order found on the exchange with our prefix and no row: a COMMITTED key and
        an order row, so it is followed, reconciled and counted like ours."""
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO idempotency_keys(action_type, key, status, mode, "
                "exchange_order_id, reason, created_at, updated_at, expires_at) "
                "VALUES ('submit', ?, 'COMMITTED', ?, ?, 'adopted', ?, ?, ?)",
                (order.client_order_id, order.mode, order.exchange_order_id, order.created_at,
                 order.created_at, order.created_at + retention_s))
            self._insert_order(order)

    def prune_keys(self, now: float) -> int:
        """Expired terminal keys whose order (if any) is terminal too."""
        with self.conn:
            self.conn.execute(
                "DELETE FROM idempotency_keys WHERE expires_at < ? "
                "AND status IN ('COMMITTED','FAILED') AND NOT EXISTS ("
                "SELECT 1 FROM orders o WHERE o.client_order_id = idempotency_keys.key "
                f"AND o.state IN ({','.join('?' * len(NON_TERMINAL_ORDER_STATES))}))",
                (now, *NON_TERMINAL_ORDER_STATES))
            return self.conn.changes()

    # --- orders ---------------------------------------------------------------------
    def _insert_order(self, o: OrderRow) -> None:
        self.conn.execute(
            f"INSERT INTO orders({_ORDER_COLS}) VALUES ({','.join('?' * 16)})",
            (o.client_order_id, o.intent_id, o.mode, o.symbol, o.side, o.order_type,
             str(o.price), str(o.quantity), str(o.filled_quantity), o.state,
             o.exchange_order_id, o.ttl_s, o.reason, int(o.adopted), o.created_at,
             o.updated_at))

    def _update_order(self, cid: str, now: float, **fields: object) -> None:
        allowed = {"state", "filled_quantity", "exchange_order_id", "reason"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update order fields {bad}")
        sets = ", ".join(f"{k}=?" for k in fields)
        values = [str(v) if isinstance(v, Decimal) else v for v in fields.values()]
        self.conn.execute(f"UPDATE orders SET {sets}, updated_at=? WHERE client_order_id=?",
                          (*values, now, cid))

    def update_order(self, cid: str, now: float, **fields: object) -> None:
        with self.conn:
            self._update_order(cid, now, **fields)

    def get_order(self, cid: str) -> OrderRow | None:
        row = self.conn.execute(f"SELECT {_ORDER_COLS} FROM orders WHERE client_order_id=?",
                                (cid,)).fetchone()
        return _order(row) if row else None

    def order_by_exchange_id(self, oid: int) -> OrderRow | None:
        row = self.conn.execute(f"SELECT {_ORDER_COLS} FROM orders WHERE exchange_order_id=?",
                                (oid,)).fetchone()
        return _order(row) if row else None

    def orders_in_states(self, mode: str, states: tuple[str, ...],
                         symbol: str = "") -> list[OrderRow]:
        return list(self._cached(("orders", mode, states, symbol),
                                 lambda: self._orders_in_states(mode, states, symbol)))

    def _orders_in_states(self, mode: str, states: tuple[str, ...],
                          symbol: str) -> list[OrderRow]:
        marks = ",".join("?" * len(states))
        sql = (f"SELECT {_ORDER_COLS} FROM orders WHERE mode=? AND state IN ({marks})"
               + (" AND symbol=?" if symbol else "") + " ORDER BY created_at")
        args = (mode, *states, symbol) if symbol else (mode, *states)
        return [_order(r) for r in self.conn.execute(sql, args)]

    def open_orders(self, mode: str, symbol: str = "") -> list[OrderRow]:
        return self.orders_in_states(mode, NON_TERMINAL_ORDER_STATES, symbol)

    def order_symbols(self, mode: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT symbol FROM orders WHERE mode=?", (mode,))]

    # --- fills and positions ----------------------------------------------------------
    def has_fill(self, trade_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM fills WHERE trade_id=?",
                                 (trade_id,)).fetchone() is not None

    def insert_fill(self, f: FillRow, mode: str, position: PositionState, now: float) -> bool:
        """Fill + new position in one transaction; False when the trade id is known."""
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO fills(trade_id, exchange_order_id, client_order_id, "
                "symbol, side, price, quantity, fee, fee_asset, ts_ms, mode, imported_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (f.trade_id, f.exchange_order_id, f.client_order_id, f.symbol, f.side,
                 str(f.price), str(f.quantity), str(f.fee), f.fee_asset, f.ts_ms, mode, now))
            if self.conn.changes() == 0:
                return False
            self.conn.execute(
                "INSERT INTO positions(symbol, mode, quantity, cost_basis, realized_pnl, fees, "
                "updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(symbol, mode) DO UPDATE SET "
                "quantity=excluded.quantity, cost_basis=excluded.cost_basis, "
                "realized_pnl=excluded.realized_pnl, fees=excluded.fees, "
                "updated_at=excluded.updated_at",
                (f.symbol, mode, str(position.quantity), str(position.cost),
                 # The column has always held realised PnL NET of fees (the meaning it
                 # had when the schema was written); the gross figure of shared/pnl.py
                 # converts exactly at this boundary, so old databases stay right.
                 str(position.realized_pnl - position.fees), str(position.fees), now))
        return True

    def fills(self, mode: str, symbol: str = "") -> list[FillRow]:
        sql = ("SELECT trade_id, exchange_order_id, client_order_id, symbol, side, price, "
               "quantity, fee, fee_asset, ts_ms FROM fills WHERE mode=?"
               + (" AND symbol=?" if symbol else "") + " ORDER BY ts_ms, rowid")
        args = (mode, symbol) if symbol else (mode,)
        return [FillRow(t, o, c, s, side, Decimal(p), Decimal(q), Decimal(fee), fa, ts)
                for (t, o, c, s, side, p, q, fee, fa, ts) in self.conn.execute(sql, args)]

    def fills_of_order(self, cid: str) -> list[FillRow]:
        return [f for f in self._fills_where("client_order_id=?", (cid,))]

    def _fills_where(self, where: str, args: tuple) -> Iterator[FillRow]:
        for (t, o, c, s, side, p, q, fee, fa, ts) in self.conn.execute(
                "SELECT trade_id, exchange_order_id, client_order_id, symbol, side, price, "
                f"quantity, fee, fee_asset, ts_ms FROM fills WHERE {where}", args):
            yield FillRow(t, o, c, s, side, Decimal(p), Decimal(q), Decimal(fee), fa, ts)

    def positions(self, mode: str) -> dict[str, PositionState]:
        return dict(self._cached(("positions", mode), lambda: self._positions(mode)))

    def _positions(self, mode: str) -> dict[str, PositionState]:
        # realized_pnl is stored net of fees (see insert_fill): gross = net + fees.
        return {s: PositionState(Decimal(q), Decimal(a), Decimal(r) + Decimal(f), Decimal(f))
                for (s, q, a, r, f) in self.conn.execute(
                    "SELECT symbol, quantity, cost_basis, realized_pnl, fees FROM positions "
                    "WHERE mode=? ORDER BY symbol", (mode,))}

    def last_fill_ts_ms(self, mode: str) -> int:
        row = self.conn.execute("SELECT max(ts_ms) FROM fills WHERE mode=?", (mode,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # --- balances ---------------------------------------------------------------------
    def set_balances(self, mode: str, balances: list[tuple[str, Decimal, Decimal]],
                     now: float) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM balances WHERE mode=?", (mode,))
            for asset, free, locked in balances:
                self.conn.execute(
                    "INSERT INTO balances(asset, mode, free, locked, updated_at) "
                    "VALUES (?,?,?,?,?)", (asset, mode, str(free), str(locked), now))

    def balances(self, mode: str) -> list[tuple[str, Decimal, Decimal]]:
        return list(self._cached(("balances", mode), lambda: self._balances(mode)))

    def _balances(self, mode: str) -> list[tuple[str, Decimal, Decimal]]:
        return [(a, Decimal(f), Decimal(lk)) for (a, f, lk) in self.conn.execute(
            "SELECT asset, free, locked FROM balances WHERE mode=? ORDER BY asset", (mode,))]

    # --- latches ----------------------------------------------------------------------
    def set_latch(self, name: str, value: bool, reason: str, now: float | None = None) -> None:
        if name not in LATCH_NAMES:
            raise ValueError(f"unknown latch {name!r}")
        at = now if now is not None else time.time()
        with self._durable():
            self.conn.execute(
                "INSERT INTO latches(name, value, reason, updated_at, set_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value, reason=excluded.reason, "
                "updated_at=excluded.updated_at, "
                # A latch set again keeps the time it was first set; a cleared one has none.
                "set_at=CASE WHEN excluded.value=0 THEN 0 "
                "WHEN latches.value=1 THEN latches.set_at ELSE excluded.set_at END",
                (name, int(value), reason[:500], at, at if value else 0.0))

    def record_arming(self, mode: str, armed: bool, report_json: str, now: float) -> int:
        """A preflight report with the arming decision it led to; returns its id."""
        with self._durable():
            self.conn.execute("INSERT INTO arming_records(at, mode, armed, report) "
                              "VALUES (?,?,?,?)", (now, mode, int(armed), report_json))
            return int(self.conn.last_insert_rowid())

    def arming_records(self) -> list[tuple[int, float, str, bool, str]]:
        return [(i, at, mode, bool(armed), report) for (i, at, mode, armed, report) in
                self.conn.execute("SELECT id, at, mode, armed, report FROM arming_records "
                                  "ORDER BY id")]

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._durable():
            self.conn.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) "
                              "DO UPDATE SET value=excluded.value", (key, value))

    def db_id(self) -> str:
        """This DB's identity (made on first call, durable)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='db_id'").fetchone()
        if row is not None:
            return str(row[0])
        new = uuid.uuid4().hex
        with self._durable():
            self.conn.execute("INSERT INTO meta(key, value) VALUES ('db_id', ?)", (new,))
        return new

    # --- incidents and resolutions ----------------------------------------------------
    def record_incident(self, kind: str, detail: str, *, symbol: str = "",
                        client_order_id: str = "", latch: str = "",
                        now: float | None = None) -> int:
        with self._durable():
            self.conn.execute(
                "INSERT INTO incidents(at, kind, symbol, client_order_id, detail, latch) "
                "VALUES (?,?,?,?,?,?)", (now if now is not None else time.time(), kind,
                                         symbol, client_order_id, detail[:1000], latch))
            return int(self.conn.last_insert_rowid())

    def incidents(self, limit: int = 100) -> list[tuple[int, float, str, str, str, str, str]]:
        return list(self.conn.execute(
            "SELECT id, at, kind, symbol, client_order_id, detail, latch FROM incidents "
            "ORDER BY id DESC LIMIT ?", (limit,)))

    def resolve_order(self, cid: str, old_state: str, new_state: str, reason: str,
                      operator: str, now: float, fill: FillRow | None = None,
                      position: PositionState | None = None) -> None:
        """The operator's word on an order, its audit row and (as filled) its fill, in
        one durable transaction."""
        with self._durable():
            order = self.get_order(cid)
            assert order is not None, f"no order {cid}"
            self._update_order(cid, now, state=new_state, reason=f"resolved:{reason}"[:500],
                               **({"filled_quantity": order.quantity} if fill else {}))
            self.conn.execute(
                "INSERT INTO order_resolutions(at, client_order_id, old_state, new_state, "
                "reason, operator) VALUES (?,?,?,?,?,?)",
                (now, cid, old_state, new_state, reason[:500], operator))
            if fill is not None and position is not None:
                self.insert_fill(fill, order.mode, position, now)  # nested: a savepoint

    def resolutions(self) -> list[tuple[int, float, str, str, str, str, str]]:
        return list(self.conn.execute(
            "SELECT id, at, client_order_id, old_state, new_state, reason, operator "
            "FROM order_resolutions ORDER BY id"))

    def latches(self) -> dict[str, tuple[bool, str]]:
        out = {n: (False, "") for n in LATCH_NAMES}
        for name, value, reason in self.conn.execute("SELECT name, value, reason FROM latches"):
            out[name] = (bool(value), reason)
        return out

    def latch_set_times(self) -> dict[str, float]:
        """Wall time each latch that is set now was set (epoch seconds)."""
        return {name: at for name, at in self.conn.execute(
            "SELECT name, set_at FROM latches WHERE value = 1")}
