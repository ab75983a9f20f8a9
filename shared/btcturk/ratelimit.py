"""Client-side pacing of BTCTurk's published rate limits, per endpoint group.

Three rules keep a session free of 429s:
- each group's requests go through sliding windows of BTCTurk's sizes (``SlidingWindow``);
- a 429 blocks its whole group until the ``Retry-After`` the exchange sent
  (``RateLimiter.block``): the exchange said its window is spent, so every request of
  the group would be refused until then, not only the one that was;
- with a ``RateJournal``, the windows start from the previous incarnation's sends (the
  exchange remembers them; a restart must too).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from loguru import logger

from .ratejournal import RateJournal

# (capacity, period seconds) per endpoint group, from the reference's rate-limit table.
# Several windows per group means all must have room (e.g. 10/1s AND 300/60s).
RATE_LIMITS: dict[str, list[tuple[int, float]]] = {
    "balances": [(120, 60.0)],
    "order_submit": [(10, 1.0), (300, 60.0)],
    "order_cancel": [(10, 1.0), (300, 60.0)],
    "order_get": [(30, 1.0), (900, 60.0)],
    "open_orders": [(300, 60.0)],
    "all_orders": [(300, 60.0)],
    "user_trades": [(120, 60.0)],
    "ticker": [(600, 60.0)],
    "orderbook": [(180, 60.0)],
}


class SlidingWindow:
    """At most ``capacity`` requests in ANY ``period_s`` window; waiters in arrival order.

    BTCTurk counts in fixed windows that start at the first request. A token bucket of the
    same capacity could send almost twice that in one such window (a full bucket, then the
    refill) and trip a 429; a sliding log never does, whatever the server's window phase.
    """

    # The server counts a request when it arrives, we when we send it: a request held up on
    # the way (a loaded machine, a slow connection) lands in a later server window than ours.
    # A margin on our window absorbs that delay; it costs a little throughput, never a 429.
    MARGIN_S = 0.25

    def __init__(self, capacity: int, period_s: float) -> None:
        self.capacity = capacity
        self.period_s = period_s + self.MARGIN_S
        self.sent: deque[float] = deque()
        self.blocked_until = 0.0  # loop time; a 429's Retry-After
        self.waits = 0  # requests that found this window full (or blocked)
        self._lock = asyncio.Lock()

    def prefill(self, sent: Iterable[float], now: float) -> None:
        """Sends made before this window existed (loop times), e.g. a previous run's."""
        recent = sorted(t for t in sent if now - t < self.period_s)
        self.sent = deque(sorted([*self.sent, *recent])[-self.capacity:])

    async def acquire(self) -> None:
        """Wait for room and take it."""
        async with self._lock:
            waited = False
            while True:
                # The loop's clock (time.monotonic in a real loop; virtual in simulation).
                now = asyncio.get_running_loop().time()
                if now < self.blocked_until:
                    delay = self.blocked_until - now
                else:
                    while self.sent and now - self.sent[0] >= self.period_s:
                        self.sent.popleft()
                    if len(self.sent) < self.capacity:
                        self.sent.append(now)
                        return
                    delay = self.period_s - (now - self.sent[0])
                if not waited:  # counted when the wait starts: a long one shows at once
                    waited = True
                    self.waits += 1
                await asyncio.sleep(delay)


class RateLimiter:
    """The windows of every group; ``journal`` (optional) persists each send.

    ``wall`` reads wall-clock seconds (the injected clock's): the journal's times must
    mean the same thing in the next process, which a monotonic reading does not."""

    def __init__(self, limits: Mapping[str, list[tuple[int, float]]] | None, *,
                 journal: RateJournal | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        self._groups: dict[str, list[SlidingWindow]] = {
            name: [SlidingWindow(cap, period) for cap, period in spec]
            for name, spec in (limits or {}).items()
        }
        self._journal = journal
        self._wall = wall
        self._seeds: dict[str, tuple[float, list[float]]] = {}
        if journal is not None:
            if wall is None:
                raise ValueError("a rate journal needs a wall clock")
            self._seeds = {g: seed for g, seed in journal.load().items() if g in self._groups}
            now = wall()
            busy = {g: sum(1 for t in sends
                           if now - t < max(w.period_s for w in self._groups[g]))
                    for g, (_, sends) in self._seeds.items()}
            if any(busy.values()):
                logger.info("rate windows continue from the previous run: {}",
                            ", ".join(f"{g} {n}" for g, n in sorted(busy.items()) if n))

    @property
    def waits(self) -> int:
        """Times a request found a window full or blocked and waited (since start)."""
        return sum(w.waits for ws in self._groups.values() for w in ws)

    def _seed(self, group: str, windows: list[SlidingWindow]) -> None:
        """The previous run's sends, as this loop's times (first use of the group: the
        loop's clock is only readable inside the running loop)."""
        blocked_wall, sends = self._seeds.pop(group)
        assert self._wall is not None
        loop_now = asyncio.get_running_loop().time()
        wall_now = self._wall()
        # A send stamped in our future (the wall clock stepped back) counts as just now.
        loop_times = [loop_now - max(0.0, wall_now - t) for t in sends]
        for window in windows:
            window.prefill(loop_times, loop_now)
            window.blocked_until = max(window.blocked_until,
                                       loop_now + max(0.0, blocked_wall - wall_now))

    def _windows(self, group: str) -> list[SlidingWindow] | None:
        """The group's windows, seeded from the journal the first time they are used."""
        windows = self._groups.get(group)
        if windows and group in self._seeds:
            self._seed(group, windows)
        return windows

    async def acquire(self, group: str) -> None:
        windows = self._windows(group)
        if not windows:
            return
        for window in windows:
            await window.acquire()
        if self._journal is not None:
            assert self._wall is not None
            self._journal.record(group, self._wall())

    def block(self, group: str, seconds: float | None) -> None:
        """The exchange refused ``group`` (429): nothing of it goes out for ``seconds``
        (its Retry-After; without one, the group's longest window, the only wait that
        is sure to outlast the exchange's window)."""
        windows = self._windows(group)
        if not windows:
            return
        if seconds is None:
            seconds = max(w.period_s for w in windows)
        until = asyncio.get_running_loop().time() + seconds
        for window in windows:
            window.blocked_until = max(window.blocked_until, until)
        if self._journal is not None:
            assert self._wall is not None
            self._journal.block(group, self._wall() + seconds)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
