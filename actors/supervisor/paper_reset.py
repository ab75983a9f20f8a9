"""``btcbot-supervisor paper reset``: start the paper account over, keeping the old one.

The simulator's account (its state file) and the executor's DB describe one account
together: resetting one without the other leaves the executor holding orders the exchange
never heard of (or the reverse). So both are archived together, with their WAL files,
into ``<data_dir>/archive/paper-reset-<UTC stamp>/``; nothing is deleted.

Refused while anything could be using them (the supervisor's instance lock, the
executor's DB lock, the simulator's state lock), and refused when the executor DB holds
live-mode rows: those are a real account's history, not paper.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

import apsw

from shared.config import Config

SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-id")  # -id: the executor's DB marker
LIVE_TABLES = ("orders", "fills", "idempotency_keys")


class ResetRefused(Exception):
    pass


@dataclass(frozen=True)
class ResetPlan:
    archive_dir: Path
    moves: list[tuple[Path, Path]]  # (from, to), only files that exist


def _lock_held(lock: Path) -> bool:
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


def live_rows(db_path: Path) -> int:
    """Rows of live mode in the executor DB (0 when there is no DB or no such table)."""
    if not db_path.exists():
        return 0
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        total = 0
        for table in LIVE_TABLES:
            try:
                row = conn.execute(f"SELECT count(*) FROM {table} WHERE mode = 'live'").fetchone()
            except apsw.SQLError:
                continue  # an older schema without this table
            total += int(row[0]) if row else 0
        return total
    finally:
        conn.close()


def plan_reset(cfg: Config, now: float | None = None) -> ResetPlan:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    archive = cfg.path(cfg.data_dir) / "archive" / f"paper-reset-{stamp}"
    moves = []
    for base in (cfg.path(cfg.executor.db_path), cfg.path(cfg.simulator.state_file)):
        for suffix in SQLITE_SIDE_FILES:
            src = base.with_name(base.name + suffix)
            if src.exists():
                moves.append((src, archive / src.name))
    return ResetPlan(archive, moves)


def check_idle(cfg: Config, supervisor_running: bool) -> None:
    """Raise ResetRefused naming whatever still uses the paper account."""
    if supervisor_running:
        raise ResetRefused("the pipeline is running: `btcbot-supervisor stop` first")
    db = cfg.path(cfg.executor.db_path)
    state = cfg.path(cfg.simulator.state_file)
    for lock, who in ((db.with_name(db.name + ".lock"), "an executor"),
                      (state.with_name(state.name + ".lock"), "an exchange simulator")):
        if _lock_held(lock):
            raise ResetRefused(f"{who} still holds {lock}: stop it first")
    live = live_rows(db)
    if live:
        raise ResetRefused(
            f"{db} holds {live} live-mode rows: it is a real account's history, not a "
            "paper account; move it aside by hand if you really mean to"
        )


def execute(plan: ResetPlan) -> None:
    plan.archive_dir.mkdir(parents=True, exist_ok=False, mode=0o700)
    for src, dst in plan.moves:
        os.replace(src, dst)  # same filesystem: atomic, nothing copied half
    for directory in {plan.archive_dir, *(src.parent for src, _ in plan.moves)}:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # the renames themselves survive a power loss
        finally:
            os.close(fd)
