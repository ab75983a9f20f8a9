"""How far the executor trusts its private WebSocket (pure: no I/O, times are passed in).

REST stays the source of truth; the private socket only *wakes* the executor (an event
for one of our orders triggers an immediate REST refresh), so while it is trusted the
periodic REST poll may run at the slow ``ws_poll_interval_s``. It is trusted when it is
connected, logged in, and has not been caught missing an event.

Why the "missed event" check: the executor's socket carries only private events, so a
quiet socket is normal and silence cannot tell a healthy socket from one the exchange
stopped feeding (transport pings keep both open). The periodic poll is the witness: a
change of one of our orders that the poll found, with no private event for that order
within ``grace_s`` either side, proves the socket is not delivering. Trust then stays
withdrawn (fast polling) until a private event for one of our orders arrives again,
which at the latest is the insert event of our next order: reconnecting alone proves
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable


class PrivateWsWatch:
    def __init__(self, fast_s: float, slow_s: float, grace_s: float) -> None:
        self.fast_s = fast_s
        self.slow_s = max(fast_s, slow_s)
        self.grace_s = grace_s
        self.suspect = False
        self._seen: dict[str, float] = {}  # order key -> last private event time
        self._pending: dict[str, float] = {}  # order key -> deadline for its event

    def on_event(self, key: str, now: float) -> None:
        """A private event for one of our orders: proof that the socket delivers."""
        self._seen[key] = now
        self._pending.pop(key, None)
        self.suspect = False
        # Only the grace window matters; keep the map small.
        if len(self._seen) > 1024:
            self._seen = {k: t for k, t in self._seen.items() if now - t <= self.grace_s}

    def on_poll_changes(self, keys: Iterable[str], now: float, up: bool) -> None:
        """The periodic poll changed these orders. Only a trusted socket is checked: an
        untrusted one is not relied on, and polling is already fast."""
        if not up or self.suspect:
            return
        for key in keys:
            seen = self._seen.get(key)
            if seen is None or now - seen > self.grace_s:
                self._pending.setdefault(key, now + self.grace_s)

    def on_down(self) -> None:
        """Disconnected: pending checks are moot (polling is fast until it is back)."""
        self._pending.clear()

    def check(self, now: float) -> list[str]:
        """Keys whose event never came; a non-empty answer withdraws the trust."""
        missed = [k for k, deadline in self._pending.items() if now >= deadline]
        for k in missed:
            del self._pending[k]
        if missed:
            self.suspect = True
            self._pending.clear()
        return missed

    def trusted(self, up: bool) -> bool:
        return up and not self.suspect

    def poll_interval(self, up: bool) -> float:
        return self.slow_s if self.trusted(up) else self.fast_s
