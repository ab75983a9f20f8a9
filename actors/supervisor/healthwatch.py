"""The supervisor's view of the whole bus for bus health, off its event loop.

A thread with its own blocking SUB socket on everything (like the recorder's), reading
each message only as far as bus health needs (``BusHealth.observe_raw``). Why not the
supervisor's asyncio subscriber: every message would wake the event loop and be decoded
in full (a book's levels as validated Decimals), and the supervisor runs beside the
tick-to-order path on a small machine; bench/latency.py's A/B showed that cost in the
p99. Here a message costs a blocking recv, a light decode and a few dict updates.

The receipt time is taken as the message leaves the socket, before the lock: while a
status request computes the report under the lock, messages are buffered here, not
delayed (their transit figures stay honest).
"""

from __future__ import annotations

import os
import threading
import time

import zmq
from loguru import logger

from bus.auth import BusAuth
from bus.health import BusHealth
from bus.limits import MAX_WIRE_BYTES

POLL_MS = 200  # how soon stop() is noticed
MAX_PENDING = 10_000  # messages buffered while a report holds the lock, then we wait
NICE_INCREMENT = 10  # below the supervisor's own priority (see _lower_priority)


class HealthListener:
    def __init__(self, endpoint: str, health: BusHealth, *, hwm: int = 100_000) -> None:
        self.endpoint = endpoint
        self.health = health
        self.hwm = hwm
        self.lock = threading.Lock()  # held by observe and by the report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None

    def start(self, auth: BusAuth) -> None:
        """``auth``: the supervisor's bus identity (a CURVE client of the bus)."""
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._run, args=(self._ctx, auth),
                                        name="bus-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is None or self._ctx is None:
            return
        self._thread.join(2.0)
        if not self._thread.is_alive():  # its socket is closed: term() cannot hang
            self._ctx.term()

    def _run(self, ctx: zmq.Context, auth: BusAuth) -> None:
        _lower_priority()
        sock = ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.RCVHWM, self.hwm)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
            sock.setsockopt(zmq.RECONNECT_IVL, 20)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            auth.client(sock, "bus")
            sock.connect(self.endpoint)
            self._loop(sock)
        except Exception:  # noqa: BLE001 - status must say so, not the thread die quietly
            logger.exception("bus health: listener failed; status shows stale figures")
        finally:
            sock.close(linger=0)

    def _loop(self, sock: zmq.Socket) -> None:
        pending: list[tuple[list[bytes], int]] = []
        recv, noblock, again = sock.recv_multipart, zmq.NOBLOCK, zmq.Again
        while not self._stop.is_set():
            # Short polls while some are waiting for the lock (a report in progress).
            if sock.poll(10 if pending else POLL_MS):
                while True:  # drain what is queued: one poll per burst
                    try:
                        frames = recv(noblock)
                    except again:
                        break
                    pending.append((frames, time.monotonic_ns()))
            if pending and self.lock.acquire(blocking=len(pending) > MAX_PENDING):
                try:
                    for frames, at in pending:
                        if not self.health.observe_raw(frames, at) \
                                and self.health.malformed == 1:
                            logger.warning("bus health: skipped a malformed frame "
                                           "(counted in bus_health.malformed)")
                finally:
                    self.lock.release()
                pending.clear()


def _lower_priority() -> None:
    """This thread only, ``NICE_INCREMENT`` below the supervisor (Linux: a thread is a task
    with its own nice value; lowering it needs no privilege). Like the recorder and the
    dashboard at nice 10, an observer yields the CPU to the tick-to-order path: without
    it, bench/latency.py's A/B showed ~0.5 ms on the p50 on this 2-core machine. Its
    receipt times then include its own wait for a CPU under load (the transit figures are
    an upper bound, as documented)."""
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + NICE_INCREMENT))
    except OSError as exc:
        logger.warning("bus health: cannot lower the listener's priority: {}", exc)
