"""Time, injected: decision code never reads the clock itself.

Live actors are handed a ``LiveClock``; tests, replays and the backtest a
``ManualClock`` they move by hand, so the same pure cores run on either (the
NautilusTrader ``LiveClock``/``TestClock`` split). Two readings exist because they
answer different questions: ``wall_ns`` is "what time is it" (stamps, day
boundaries), ``mono_ns`` only orders local events (never compare it across
processes or runs).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch."""
        ...

    def mono_ns(self) -> int:
        """A monotonic reading: only differences within one process mean anything."""
        ...


class LiveClock:
    """The process's real clocks."""

    def wall_ns(self) -> int:
        return time.time_ns()

    def mono_ns(self) -> int:
        return time.monotonic_ns()


class ManualClock:
    """A clock that moves only when told to: tests, replay and the backtest."""

    def __init__(self, wall_ns: int = 0, mono_ns: int = 0) -> None:
        self._wall = wall_ns
        self._mono = mono_ns

    def wall_ns(self) -> int:
        return self._wall

    def mono_ns(self) -> int:
        return self._mono

    def advance(self, ns: int) -> None:
        """Both readings move on by ``ns`` (never backwards)."""
        if ns < 0:
            raise ValueError("a clock does not go backwards")
        self._wall += ns
        self._mono += ns

    def set_wall(self, wall_ns: int) -> None:
        """Jump the wall reading to ``wall_ns`` (a recorded message's time); the
        monotonic reading moves by the same amount when that is forwards."""
        if wall_ns > self._wall:
            self._mono += wall_ns - self._wall
        self._wall = wall_ns
