"""Test-only fault injection, wired in at start and absent from the send path when off.

``BTCBOT_TEST_CRASH_AT=<point>[:<n>]`` SIGKILLs the executor the n-th time (default 1st)
it reaches ``point``. Unset (the normal case) ``from_env`` returns ``NO_FAULTS``, whose
``hit`` does nothing, and the venue is not wrapped at all.

Points:
- ``after_reserve``: the key and order row are committed; the "accepted" reply has not
  been sent (the caller sees a timeout and retries against the restarted executor).
- ``after_send``: (``CrashAfterSendVenue``, a venue wrapper) the submit request runs as
  its own task while the wrapper polls the
  simulator's ``GET /sim/received-orders`` (up to 3 s) until it lists the client order id,
  then dies; the code that reads the submit's result is never reached, so the response
  (even if it already arrived in the socket) is never processed. (aiohttp's
  ``on_request_chunk_sent`` trace fires *before* the write, so it cannot mark "sent".)
  Only meaningful in paper mode against the simulator.
- ``after_response``: ``submit_order`` returned the exchange order id; nothing about it is
  persisted yet.
- ``during_recovery``: a probe of an inherited (previous-incarnation) key returned and
  its result is not persisted yet.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp
import apsw
from loguru import logger

if TYPE_CHECKING:
    from actors.executor.venues.base import Venue

ENV = "BTCBOT_TEST_CRASH_AT"
# BTCBOT_TEST_DB_FAULT=<trigger file>: the DB is opened through DiskFaultVFS, whose writes
# fail with ENOSPC (SQLITE_FULL) while the trigger file exists and holds "enospc", or
# with EIO (SQLITE_IOERR) while it holds "eio". Unset: the default VFS, nothing wrapped.
DB_FAULT_ENV = "BTCBOT_TEST_DB_FAULT"
POINTS = frozenset({"after_reserve", "after_send", "after_response", "during_recovery"})


class Faults:
    """Where the order flow reports its fault points (no-op unless a test asks)."""

    active = False
    db_trigger: str | None = None

    def hit(self, point: str) -> None:
        return None

    def db_vfs(self) -> str | None:
        """The VFS name to open the DB with (None: SQLite's default)."""
        if not self.db_trigger:
            return None
        return DiskFaultVFS.register(self.db_trigger)

    def wrap(self, venue: Venue, sim_base_url: str) -> Venue:
        return venue


NO_FAULTS = Faults()


class CrashHook(Faults):
    active = True

    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.remaining = 0
        if spec:
            point, _, count = spec.partition(":")
            if point not in POINTS:
                raise ValueError(f"{ENV}={spec!r}: point must be one of {sorted(POINTS)}")
            self.point = point
            self.remaining = int(count) if count else 1

    @staticmethod
    def from_env() -> Faults:
        spec = os.environ.get(ENV)
        trigger = os.environ.get(DB_FAULT_ENV)
        if not spec and not trigger:
            return NO_FAULTS
        faults = CrashHook(spec) if spec else Faults()
        faults.db_trigger = trigger or None
        return faults

    def wrap(self, venue: Venue, sim_base_url: str) -> Venue:
        if self.point != "after_send":
            return venue
        return CrashAfterSendVenue(venue, self, sim_base_url)  # type: ignore[return-value]

    def hit(self, point: str) -> None:
        if self.point != point:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            self.kill(point)

    @staticmethod
    def kill(point: str) -> None:
        logger.warning("test crash hook: SIGKILL at {}", point)
        os.kill(os.getpid(), signal.SIGKILL)

    async def after_send(self, sim_base_url: str, cid: str) -> None:
        """Called while the submit request runs as a separate task: counts the hit and, if
        it is the one, waits until the simulator lists ``cid`` and kills the process. The
        caller awaits this *before* awaiting the submit task, so whatever the response
        says is never processed."""
        self.remaining -= 1
        if self.remaining > 0:
            return
        await _wait_received(sim_base_url, cid)
        self.kill("after_send")


class CrashAfterSendVenue:
    """The venue, except that a submit dies once the simulator has received it."""

    def __init__(self, inner: Venue, hook: CrashHook, sim_base_url: str) -> None:
        self._inner = inner
        self._hook = hook
        self._url = sim_base_url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def submit(self, symbol: str, side: str, quantity: Decimal, price: Decimal,
                     client_order_id: str) -> int:
        task = asyncio.ensure_future(self._inner.submit(symbol, side, quantity, price,
                                                        client_order_id))
        await self._hook.after_send(self._url, client_order_id)
        return await task


class DiskFaultVFS(apsw.VFS):
    """SQLite's default VFS, except that writes fail while a trigger file says so."""

    NAME = "btcbot-disk-fault"
    _registered: DiskFaultVFS | None = None

    def __init__(self, trigger: str) -> None:
        self.trigger = trigger
        super().__init__(self.NAME, "")

    @classmethod
    def register(cls, trigger: str) -> str:
        if cls._registered is None:
            cls._registered = cls(trigger)
        return cls.NAME

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return _DiskFaultFile(self.trigger, name, flags)


class _DiskFaultFile(apsw.VFSFile):
    def __init__(self, trigger: str, name: Any, flags: list[int]) -> None:
        self.trigger = trigger
        super().__init__("", name, flags)

    def _fault(self) -> None:
        try:
            kind = open(self.trigger).read().strip()  # noqa: SIM115 - tiny, test only
        except OSError:
            return
        if kind == "eio":
            raise apsw.IOError("injected EIO")
        raise apsw.FullError("injected ENOSPC")

    def xWrite(self, data: bytes, offset: int) -> None:
        self._fault()
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        self._fault()
        super().xSync(flags)


async def _wait_received(base_url: str, cid: str, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(f"{base_url}/sim/received-orders") as r:
                    if cid and cid in await r.text():
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
