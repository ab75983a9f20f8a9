"""An asyncio event loop on virtual time (the ``looptime`` idea, made small).

The loop's clock is a number we own. Whenever every task is idle (nothing ready to run),
the loop would block in ``select(timeout)`` until the next timer; here ``select`` does not
wait: it moves virtual time forward by ``timeout`` and returns at once. An hour of timers
therefore passes in however long the callbacks themselves take, and the order in which
things happen is a pure function of the program and its inputs (no wall clock, no
threads): the same seed gives the same schedule.

Nothing in the simulation uses file descriptors or threads: work handed to the default
executor (``asyncio.to_thread``, e.g. the executor's WAL checkpoint) runs inline. A loop
with no timer left and nothing ready would block forever: that is a deadlock of the
simulated system and raises ``SimulationStalled``.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")
# Loop turns in a row with work ready and virtual time standing still: something spins
# (a task that re-schedules itself without sleeping), which real time would hide.
LIVELOCK_SPINS = 2_000_000
MIN_STEP = 1e-6  # seconds: the smallest step a positive sleep takes


class SimulationStalled(RuntimeError):
    """Nothing ready and no timer: every task waits for something that cannot happen."""


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        assert self.loop is not None
        loop = self.loop
        if timeout is None:
            raise SimulationStalled("no task is ready and no timer is pending")
        if timeout > 0:
            loop.advance(timeout)
            loop.spins = 0
        else:
            loop.spins += 1
            if loop.spins > LIVELOCK_SPINS:
                ready = [_describe(h) for h in list(loop._ready)[:3]]  # type: ignore[attr-defined]
                raise SimulationStalled(f"livelock: {loop.spins} loop turns without time "
                                        f"passing; ready: {ready}")
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual seconds since the loop's start (plus ``start``)."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = start
        self.spins = 0
        # The clock resolution lets a timer due within it run now; with virtual time a
        # timer runs exactly when due.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def call_later(self, delay: float, callback: Any, *args: Any,
                   context: Any = None) -> asyncio.TimerHandle:
        """A positive delay is at least ``MIN_STEP``: a delay below the float resolution
        of the clock would be due at once, and a loop that sleeps "the rest of a window"
        (the REST client's rate window) would then spin forever on a clock that never
        moves, where a real clock would have moved on."""
        if 0 < delay < MIN_STEP:
            delay = MIN_STEP
        return super().call_later(delay, callback, *args, context=context)

    def run_in_executor(self, executor: Executor | None, func: Callable[..., T],
                        *args: Any) -> asyncio.Future[T]:
        """Inline: a thread would make the schedule depend on the OS."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            future.set_exception(exc)
        return future


def _describe(handle: Any) -> str:
    """A ready callback, named by the task and the line it waits at when it is one."""
    task = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(task, asyncio.Task):
        frames = task.get_stack(limit=3)
        where = " < ".join(f"{f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_lineno}"
                           for f in frames)
        return f"task {task.get_name()} at {where}"
    return repr(handle)
