"""Clocks driven by the virtual loop: ``shared.clock.Clock`` for each simulated actor."""

from __future__ import annotations

import asyncio

# 2026-01-05 09:00 UTC: a fixed start, so wall-clock stamps are part of the determinism.
EPOCH_NS = 1_767_603_600 * 10**9


class VirtualClock:
    """Wall and monotonic readings from the loop's virtual time. ``skew_ns`` moves this
    actor's wall reading only (clock skew between processes, as NTP trouble would)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, mono_base_ns: int = 0) -> None:
        self.loop = loop
        self.skew_ns = 0
        self.mono_base_ns = mono_base_ns

    def wall_ns(self) -> int:
        return EPOCH_NS + int(self.loop.time() * 1e9) + self.skew_ns

    def mono_ns(self) -> int:
        return self.mono_base_ns + int(self.loop.time() * 1e9)
