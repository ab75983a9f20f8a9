"""The data directory remembers that it has held a DB.

Beside the DB file, ``<db>-id`` holds the DB's identity (the ``meta`` table's db_id). On
start, before the DB is opened (opening would create an empty one):
- marker present, DB missing or empty (0 bytes) → refuse (exit 2): the kill switch, open
  orders and idempotency keys it held would be silently lost;
- marker present, DB with another identity → refuse: a different DB was put in its place;
- no marker → this is the DB's first start here (or an install from before markers):
  the marker is written.
``paper reset`` archives the marker with the DB, so a reset starts clean.
"""

from __future__ import annotations

from pathlib import Path

from shared.files import write_private_file

RESET_HINT = ("restore the DB file, or start over with `btcbot-supervisor paper reset` "
              "(paper; archives both), or, only after reconciling the account by hand, "
              "move the marker {marker} away")


class DbRefused(Exception):
    pass


def marker_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-id")


def check_before_open(db_path: Path) -> str | None:
    """Raise DbRefused when the marker says a DB should be here and none is; returns the
    remembered identity (None: no marker)."""
    marker = marker_path(db_path)
    if not marker.exists():
        return None
    remembered = marker.read_text().strip()
    size = db_path.stat().st_size if db_path.exists() else None
    if size is None or size == 0:
        what = "missing" if size is None else "empty (0 bytes)"
        raise DbRefused(f"executor DB {db_path} is {what}, but {marker} says this data dir "
                        f"held DB {remembered}: refusing to start on a new empty DB; "
                        + RESET_HINT.format(marker=marker))
    return remembered


def check_after_open(db_path: Path, remembered: str | None, db_id: str) -> None:
    marker = marker_path(db_path)
    if remembered is None:
        write_private_file(marker, (db_id + "\n").encode())
    elif remembered != db_id:
        raise DbRefused(f"executor DB {db_path} is DB {db_id}, but {marker} says this data "
                        f"dir held DB {remembered}: refusing a different DB; "
                        + RESET_HINT.format(marker=marker))
