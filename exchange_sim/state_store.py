"""The simulator's persistent paper account (``--state PATH``): one apsw SQLite file.

Holds everything a restart must continue: balances, every order (open and past), every
fill, the id ceilings and the market walk (RNG state, mids, 24 h figures, recent trades).

Durability follows the executor's discipline: WAL, and every commit that records what a
client has been (or is about to be) told — an accepted order, a fill, a cancel, an id
ceiling — is made with ``synchronous=FULL``, so it is fsynced before the HTTP answer or
the WebSocket event leaves the process. Saves run synchronously inside the handler, with
no ``await`` between the engine's change and the commit, so no frame about a change can be
written before the change is durable. The market walk is saved less strictly (every 30 s
and at shutdown): losing a few seconds of random walk loses nothing a client saw
as a commitment.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import apsw
import msgspec

from .engine import Account, Changes, Engine, Fill, SimOrder
from .market import Market

SCHEMA_VERSION = 1
_encode = msgspec.json.Encoder().encode
_order_decoder = msgspec.json.Decoder(SimOrder)
_fill_decoder = msgspec.json.Decoder(Fill)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS balances (
    asset TEXT PRIMARY KEY, free TEXT NOT NULL, locked TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY, is_open INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fills (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
"""


class StateError(Exception):
    """The state file cannot be used (unreadable, another schema, in use); says why."""


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _lock(path: Path) -> int:
    """One simulator per state file (and `paper reset` can tell one is running):
    flock on ``<state>.lock``, released by the kernel when the process dies."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(f"{path} is in use by another simulator ({lock_path(path)})") from None
    return fd


@dataclass
class LoadedState:
    account: Account
    orders: list[SimOrder]
    fills: list[Fill]
    next_ids: dict[str, int]
    market: dict[str, Any] | None
    seed: int | None


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = _lock(path)
        try:
            self._open(path)
        except BaseException:
            os.close(self._lock_fd)
            raise
        os.chmod(path, 0o600)

    def _open(self, path: Path) -> None:
        try:
            self.conn = apsw.Connection(str(path))
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StateError(f"{path}: cannot switch to WAL (got {mode})")
            self.conn.execute("PRAGMA synchronous=FULL")
            with self.conn:
                self.conn.execute(_SCHEMA)
                version = self._meta("schema_version")
                if version is None:
                    self._set_meta("schema_version", str(SCHEMA_VERSION))
                elif int(version) != SCHEMA_VERSION:
                    raise StateError(
                        f"{path}: schema version {version}, this simulator reads {SCHEMA_VERSION}"
                    )
        except apsw.Error as exc:
            raise StateError(f"{path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()
        os.close(self._lock_fd)

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # ------------------------------------------------------------------ load

    def load(self) -> LoadedState | None:
        """The saved account, or None for a state file that has never held one."""
        if self._meta("initialized") is None:
            return None
        account = Account()
        for asset, free, locked in self.conn.execute("SELECT asset, free, locked FROM balances"):
            account.free[asset] = Decimal(free)
            account.locked[asset] = Decimal(locked)
        orders = [_order_decoder.decode(b) for (b,) in self.conn.execute("SELECT body FROM orders")]
        fills = [_fill_decoder.decode(b) for (b,) in self.conn.execute("SELECT body FROM fills")]
        next_ids = {
            key.removeprefix("ceiling:"): int(value)
            for key, value in self.conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'ceiling:%'"
            )
        }
        market = self._meta("market")
        seed = self._meta("seed")
        return LoadedState(
            account=account,
            orders=orders,
            fills=fills,
            next_ids=next_ids,
            market=msgspec.json.decode(market) if market else None,
            seed=int(seed) if seed is not None else None,
        )

    # ------------------------------------------------------------------ save

    def reserve(self, name: str, ceiling: int) -> None:
        """Make an id ceiling durable before any id below it is handed out."""
        with self.conn:
            self._set_meta(f"ceiling:{name}", str(ceiling))

    def save(self, account: Account, changes: Changes) -> None:
        """One fsynced transaction: the account's balances, changed orders, new fills."""
        with self.conn:
            self._save_account(account)
            self.conn.executemany(
                "INSERT INTO orders(id, is_open, body) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET is_open = excluded.is_open, body = excluded.body",
                [(o.id, int(o.is_open), _encode(o).decode()) for o in changes.orders.values()],
            )
            self.conn.executemany(
                "INSERT OR IGNORE INTO fills(id, body) VALUES (?, ?)",
                [(f.id, _encode(f).decode()) for f in changes.fills],
            )
            self.conn.executemany("DELETE FROM orders WHERE id = ?",
                                  [(i,) for i in sorted(changes.forgotten)])

    def _save_account(self, account: Account) -> None:
        assets = sorted(set(account.free) | set(account.locked))
        self.conn.executemany(
            "INSERT INTO balances(asset, free, locked) VALUES (?, ?, ?) "
            "ON CONFLICT(asset) DO UPDATE SET free = excluded.free, locked = excluded.locked",
            [
                (a, str(account.free.get(a, Decimal(0))), str(account.locked.get(a, Decimal(0))))
                for a in assets
            ],
        )

    def initialize(self, account: Account, seed: int, ceilings: dict[str, int]) -> None:
        """A fresh account: wipe orders and fills (ceilings are kept: ids never repeat)."""
        with self.conn:
            self.conn.execute("DELETE FROM orders")
            self.conn.execute("DELETE FROM fills")
            self.conn.execute("DELETE FROM balances")
            self._save_account(account)
            for name, ceiling in ceilings.items():
                current = self._meta(f"ceiling:{name}")
                if current is None or int(current) < ceiling:
                    self._set_meta(f"ceiling:{name}", str(ceiling))
            self._set_meta("seed", str(seed))
            self._set_meta("initialized", "1")

    def save_market(self, snapshot: dict[str, Any]) -> None:
        with self.conn:
            self._set_meta("market", _encode(snapshot).decode())


def attach(path: Path, market: Market, engine: Engine, seed: int, now_ms: int) -> StateStore:
    """Continue the account saved at ``path`` in ``market`` and ``engine`` (or start one
    there), and make their changes durable from now on. The simulator's start and the
    deterministic simulation's venue restart both come through here."""
    store = StateStore(path)
    try:
        loaded = store.load()
        if loaded is not None:
            market.restore_ids(loaded.next_ids)
            if loaded.market is not None:
                market.restore(loaded.market, now_ms)
            engine.restore(loaded.account, loaded.orders, loaded.fills, loaded.next_ids)
        else:
            ceilings = {**engine.id_ceilings(), "trade_id": market.trade_ids.ceiling}
            store.initialize(engine.account, seed, ceilings)
        engine.track_changes(store.reserve)
        market.trade_ids.on_reserve = store.reserve
        store.save_market(market.snapshot())
    except BaseException:
        store.close()
        raise
    return store
