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
import contextvars
import heapq
import selectors
from asyncio import format_helpers
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")
# Loop turns in a row with work ready and virtual time standing still: something spins
# (a task that re-schedules itself without sleeping), which real time would hide.
LIVELOCK_SPINS = 2_000_000
MIN_STEP = 1e-6  # seconds: the smallest step a positive sleep takes
# asyncio.base_events' own constants (_run_once below repeats its steps).
_MIN_SCHEDULED = 100
_MIN_CANCELLED_FRACTION = 0.5
_MAX_SELECT_TIMEOUT = 24 * 3600


class _Handle(asyncio.Handle):
    """``asyncio.Handle`` made without its debug-mode checks (the loop makes these only
    when not in debug mode)."""

    __slots__ = ()

    def __init__(self, callback: Any, args: tuple[Any, ...], loop: Any,
                 context: Any) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._repr = None
        self._source_traceback = None
        self._context = contextvars.copy_context() if context is None else context


class _TimerHandle(asyncio.TimerHandle):
    """``asyncio.TimerHandle`` likewise."""

    __slots__ = ()

    def __init__(self, when: float, callback: Any, args: tuple[Any, ...], loop: Any,
                 context: Any) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._repr = None
        self._source_traceback = None
        self._context = contextvars.copy_context() if context is None else context
        self._when = when
        self._scheduled = False

    def cancel(self) -> None:
        """``TimerHandle.cancel`` in one frame (every sleep cancels its timer when it
        ends, fired or not): the loop counts a cancelled timer still in its heap."""
        if not self._cancelled:
            if self._scheduled:
                self._loop._timer_cancelled_count += 1
            self._cancelled = True
            self._callback = None
            self._args = None


class SimulationStalled(RuntimeError):
    """Nothing ready and no timer: every task waits for something that cannot happen."""


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        assert self.loop is not None
        self.loop.wait(timeout)
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

    def wait(self, timeout: float | None) -> None:
        """What ``select(timeout)`` does here: move time on instead of waiting."""
        if timeout is None:
            raise SimulationStalled("no task is ready and no timer is pending")
        if timeout > 0:
            self._now += timeout
            self.spins = 0
        else:
            self.spins += 1
            if self.spins > LIVELOCK_SPINS:
                ready = [_describe(h) for h in list(self._ready)[:3]]  # type: ignore[attr-defined]
                raise SimulationStalled(f"livelock: {self.spins} loop turns without time "
                                        f"passing; ready: {ready}")

    def _run_once(self) -> None:
        """``BaseEventLoop._run_once`` (CPython 3.11) step for step, without what a
        virtual loop does not need: no I/O events to process, no debug timing (virtual
        time would show every callback taking 0 s), the selector call and each handle's
        ``_run`` inlined. Half a million turns an hour: this was the largest single
        cost of the simulation. The order in which handles run is exactly the base
        loop's (the same heap order, see ``call_at``; the same compaction rule), so
        traces do not move."""
        sched: list[tuple[float, asyncio.TimerHandle]] = self._scheduled  # type: ignore[attr-defined]
        count = len(sched)
        if count > _MIN_SCHEDULED and \
                self._timer_cancelled_count / count > _MIN_CANCELLED_FRACTION:  # type: ignore[attr-defined]
            kept = []
            for entry in sched:
                if entry[1]._cancelled:  # type: ignore[attr-defined]
                    entry[1]._scheduled = False  # type: ignore[attr-defined]
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            self._scheduled = sched = kept  # type: ignore[attr-defined]
            self._timer_cancelled_count = 0  # type: ignore[attr-defined]
        else:
            while sched and sched[0][1]._cancelled:  # type: ignore[attr-defined]
                self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
                handle = heapq.heappop(sched)[1]
                handle._scheduled = False  # type: ignore[attr-defined]
        ready = self._ready  # type: ignore[attr-defined]
        if ready or self._stopping:  # type: ignore[attr-defined]
            self.wait(0)
        elif sched:
            # min(max(0, due - now), the cap), without two builtin calls a turn.
            timeout = sched[0][0] - self._now
            if timeout < 0:
                timeout = 0
            elif timeout > _MAX_SELECT_TIMEOUT:
                timeout = _MAX_SELECT_TIMEOUT
            self.wait(timeout)
        else:
            self.wait(None)
        end_time = self._now + self._clock_resolution
        while sched and sched[0][0] < end_time:
            handle = heapq.heappop(sched)[1]
            handle._scheduled = False  # type: ignore[attr-defined]
            ready.append(handle)
        popleft = ready.popleft
        for _ in range(len(ready)):
            handle = popleft()
            if handle._cancelled:  # type: ignore[attr-defined]
                continue
            # Handle._run, inlined (one Python frame less per callback).
            try:
                handle._context.run(handle._callback, *handle._args)  # type: ignore[attr-defined]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001 - reported as Handle._run does
                cb = format_helpers._format_callback_source(  # type: ignore[attr-defined]
                    handle._callback, handle._args)  # type: ignore[attr-defined]
                self.call_exception_handler({"message": f"Exception in callback {cb}",
                                             "exception": exc, "handle": handle})

    # The scheduling calls, lean: the base loop's checks (closed, debug: thread and
    # callback) and handles, through one frame instead of three or four each.
    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        if self._debug:  # type: ignore[attr-defined]
            return super().call_soon(callback, *args, context=context)
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def call_at(self, when: float, callback: Any, *args: Any,
                context: Any = None) -> asyncio.TimerHandle:
        """The heap holds ``(when, handle)`` pairs: the floats compare in C where the
        base loop calls ``TimerHandle.__lt__`` (Python) ~8 times per timer. A pair
        compares exactly as its handle does (equal times fall through to the
        handles, whose ``<`` is False then, as before), so the heap's order, ties
        included, is the base loop's."""
        if when is None:
            raise TypeError("when cannot be None")
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        if self._debug:  # type: ignore[attr-defined]
            self._check_thread()  # type: ignore[attr-defined]
            self._check_callback(callback, "call_at")  # type: ignore[attr-defined]
            timer = asyncio.TimerHandle(when, callback, args, self, context)
        else:
            timer = _TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._scheduled, (when, timer))  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def call_later(self, delay: float, callback: Any, *args: Any,
                   context: Any = None) -> asyncio.TimerHandle:
        """A positive delay is at least ``MIN_STEP``: a delay below the float resolution
        of the clock would be due at once, and a loop that sleeps "the rest of a window"
        (the REST client's rate window) would then spin forever on a clock that never
        moves, where a real clock would have moved on."""
        if delay is None:
            raise TypeError("delay cannot be None")
        if 0 < delay < MIN_STEP:
            delay = MIN_STEP
        return self.call_at(self._now + delay, callback, *args, context=context)

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
