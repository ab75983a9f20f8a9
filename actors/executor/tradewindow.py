"""Which of the account's trades the executor asks for, and which it already holds.

The exchange's trade list is the source of truth for fills; it is read after every
private WebSocket event and on every poll. Asking each time for every trade since the
oldest open order made a refresh cost O(session): in a busy session each fill re-read
hundreds of trades (a conversion and a DB lookup each) on the event loop that also sends
orders. Instead a read starts where the last successful one started, less an overlap for
clock skew and for trades that the exchange lists late; and trade ids already imported
are skipped before they are even converted.
"""

from __future__ import annotations

from collections import OrderedDict

OVERLAP_S = 60.0
REMEMBERED_IDS = 50_000


class TradeWindow:
    def __init__(self, overlap_s: float = OVERLAP_S, remember: int = REMEMBERED_IDS) -> None:
        self.overlap_s = overlap_s
        self.remember_max = remember
        self.synced_from: float | None = None  # wall start of the last successful read
        self._ids: OrderedDict[int, None] = OrderedDict()

    def start_s(self, now: float, oldest_open_s: float | None, lookback_s: float = 0.0) -> float:
        """Where the next read starts (wall seconds). Before the first successful read,
        every fill of an order still open may be unseen: back to the oldest one."""
        candidates = [now - self.overlap_s]
        if self.synced_from is not None:
            candidates.append(self.synced_from - self.overlap_s)
        elif oldest_open_s is not None:
            candidates.append(oldest_open_s - self.overlap_s)
        if lookback_s:
            candidates.append(now - lookback_s)
        return min(candidates)

    def read_ok(self, started_at: float) -> None:
        """A read that started at ``started_at`` was imported in full."""
        if self.synced_from is None or started_at > self.synced_from:
            self.synced_from = started_at

    def __contains__(self, trade_id: object) -> bool:
        return trade_id in self._ids

    def remember(self, trade_id: int) -> None:
        self._ids[trade_id] = None
        if len(self._ids) > self.remember_max:
            self._ids.popitem(last=False)
