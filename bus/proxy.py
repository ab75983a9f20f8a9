"""The ``bus`` process: an XSUB/XPUB proxy and nothing else.

The proxy runs zmq's C loop (``proxy_steerable``) in a thread, which releases the
GIL; the event loop of the actor runtime only heartbeats and handles SIGTERM. A
SIGSTOP freezes the heartbeat too, so the supervisor detects a stuck bus.
"""

from __future__ import annotations

import asyncio
import os
import threading

import zmq

from actors.runtime import Actor, main_for
from shared.files import ensure_private_dir


class BusActor(Actor):
    name = "bus"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        ensure_private_dir(self.cfg.runtime_path)
        self._sync_ctx = zmq.Context()
        self._thread: threading.Thread | None = None
        self._control_endpoint = f"inproc://bus-control-{os.getpid()}"
        self._bind_proxy_sockets()

    def _bind_proxy_sockets(self) -> None:
        # Bound before the runtime connects its own publisher to them.
        hwm = self.cfg.bus.hwm
        self._xsub = self._sync_ctx.socket(zmq.XSUB)
        self._xpub = self._sync_ctx.socket(zmq.XPUB)
        for sock in (self._xsub, self._xpub):
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.RCVHWM, hwm)
            sock.setsockopt(zmq.LINGER, 0)
        self._xsub.bind(self.cfg.bus_pub_endpoint)
        self._xpub.bind(self.cfg.bus_sub_endpoint)
        self._control = self._sync_ctx.socket(zmq.PAIR)
        self._control.bind(self._control_endpoint)

    async def setup(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_proxy, args=(ready,), daemon=True,
                                        name="proxy")
        self._thread.start()
        await asyncio.to_thread(ready.wait, 5.0)

    def _run_proxy(self, ready: threading.Event) -> None:
        steer = self._sync_ctx.socket(zmq.PAIR)
        steer.connect(self._control_endpoint)
        ready.set()
        try:
            zmq.proxy_steerable(self._xsub, self._xpub, None, steer)
        except zmq.ContextTerminated:
            pass
        finally:
            steer.close(linger=0)

    async def teardown(self) -> None:
        self._control.send(b"TERMINATE")
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)
        for sock in (self._xsub, self._xpub, self._control):
            sock.close(linger=0)
        self._sync_ctx.term()


def main() -> None:
    main_for(BusActor)


if __name__ == "__main__":
    main()
