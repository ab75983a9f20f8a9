"""The supervisor's status document over time: the latest one, the equity curve and
when each latch was first seen set (pure state; the actor polls, this remembers).

The status document is the supervisor's (``status --json``); nothing here recomputes
what it decides (trading state, reasons, latches). The one figure read out of it is
the total net PnL, taken from its ``pnl_total`` when the supervisor provides one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from actors.dashboard.equitylog import EquityLog
from actors.dashboard.model import Series

LATCHES = ("kill_switch", "safety_latch", "paused")


def total_pnl(doc: dict[str, Any]) -> dict[str, Decimal] | None:
    """Realized, unrealized, fees and net of the whole book, as the status says.

    ``pnl_total`` is the supervisor's own sum when it has one; an older supervisor only
    has per-symbol rows, whose net is realized + unrealized − fees (the definition its
    text rendering prints as "total net PnL")."""
    try:
        if isinstance(doc.get("pnl_total"), dict):
            t = doc["pnl_total"]
            return {k: Decimal(str(t[k])) for k in ("realized", "unrealized", "fees", "net")}
        rows = doc.get("pnl") or []
        if not rows:
            return None
        out = {k: sum((Decimal(str(r[k])) for r in rows), Decimal(0))
               for k in ("realized", "unrealized", "fees")}
        out["net"] = out["realized"] + out["unrealized"] - out["fees"]
        return out
    except (KeyError, InvalidOperation, TypeError):
        return None


class StatusWatch:
    def __init__(self, *, points: int = 3600, wall: Callable[[], float] = time.time,
                 day_log: EquityLog | None = None) -> None:
        self.doc: dict[str, Any] | None = None
        self.day_log = day_log  # the trading day's curve, kept across restarts
        self.wall = wall
        self.updated_wall = 0.0
        self.failures = 0  # consecutive polls the supervisor did not answer
        self.equity = Series(points)
        self.latch_since: dict[str, float] = {}

    def update(self, doc: dict[str, Any] | None) -> None:
        now = self.wall()
        if doc is None:
            self.failures += 1
            return
        self.failures = 0
        self.doc, self.updated_wall = doc, now
        total = total_pnl(doc)
        if total is not None:
            self.equity.add(now, float(total["net"]))
            if self.day_log is not None:
                self.day_log.add(now, float(total["net"]))
        latch = doc.get("latch") or {}
        for name in LATCHES:
            if latch.get(name):
                self.latch_since.setdefault(name, now)
            else:
                self.latch_since.pop(name, None)

    @property
    def age_s(self) -> float | None:
        return None if self.doc is None else self.wall() - self.updated_wall
