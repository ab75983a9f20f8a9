"""Clocks: where time comes from, injected so decision code can be driven by a test.

``LiveClock`` reads the system (wall time for what is stored and shown, the monotonic
clock for intervals and timeouts, asyncio for sleeping). ``ManualClock`` only moves when
a test advances it, so logic that depends on elapsed time runs without waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (stored, compared across processes)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (intervals, timeouts)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class LiveClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Time stands still until ``advance``; ``sleep`` advances it and yields once, so a
    loop under test runs step by step without real waiting."""

    def __init__(self, wall: float = 1_700_000_000.0, mono: float = 1_000.0) -> None:
        self._wall = wall
        self._mono = mono

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._wall += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
