"""The ``bus`` process: an XSUB/XPUB proxy that checks every frame it forwards.

The forwarding loop runs in a thread (zmq releases the GIL while it waits); the
asyncio loop of the process only heartbeats, obeys ``control`` and SIGTERM. It is
the bus's own small runtime: the bus is the bottom layer and imports no actor code.
A SIGSTOP freezes the heartbeat too, so the supervisor detects a stuck bus.

Both sides are CURVE servers (``bus/auth.py``): only roster members connect, and each
message carries its publisher's authenticated identity (``User-Id``).

Every data frame from a publisher is checked before it is forwarded: two frames,
a topic and a payload within ``bus.limits``, and a topic the publisher's identity may
publish (``bus.roles``: nobody but the executor publishes ``hb.executor``, nobody but
marketdata ``md.book.*``); anything else is dropped and counted
(``proxy_dropped_<reason>`` in the heartbeat), never forwarded to a subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import zmq
import zmq.asyncio
from loguru import logger
from zmq.backend import Socket as _BaseSocket

from bus.auth import BusAuth, KeysError, load_for
from bus.limits import MAX_PAYLOAD_BYTES, MAX_TOPIC_BYTES, MAX_WIRE_BYTES
from bus.messages import Control, Heartbeat
from bus.roles import PublishGate
from bus.transport import Publisher, Subscriber, new_incarnation
from shared.config import Config, ConfigError, load_config
from shared.files import ensure_private_dir
from shared.logging import setup_logging

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

# Messages forwarded per wake-up before the loop polls again (subscriptions, stop).
BURST = 1000

# All the frames of one message -> None to forward, or the reason to drop.
FrameCheck = Callable[[list[zmq.Frame]], str | None]


def check_shape(frames: list[zmq.Frame]) -> str | None:
    """The checks that need no identity: frame count and sizes."""
    if len(frames) != 2:
        return "frame_count"
    if len(frames[0]) > MAX_TOPIC_BYTES:
        return "oversize_topic"
    if len(frames[1]) > MAX_PAYLOAD_BYTES:
        return "oversize_payload"
    return None


class FrameProxy:
    """The forwarding loop: publishers → ``check`` → subscribers, subscriptions back.

    Sockets are bound by the constructor (before anyone connects) and used only by the
    loop thread afterwards; ``stop()`` may be called from any thread."""

    def __init__(self, ctx: zmq.Context, pub_endpoint: str, sub_endpoint: str, *,
                 hwm: int, auth: BusAuth, check: FrameCheck = check_shape,
                 configure: Callable[[zmq.Socket], None] | None = None) -> None:
        self.check = check
        self.gate = PublishGate()
        self.counters: Counter[str] = Counter()
        self._ctx = ctx
        self.xsub = ctx.socket(zmq.XSUB)
        self.xpub = ctx.socket(zmq.XPUB)
        for sock in (self.xsub, self.xpub):
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.RCVHWM, hwm)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
            if configure is not None:
                configure(sock)
            auth.server(sock)
        self.xsub.bind(pub_endpoint)
        self.xpub.bind(sub_endpoint)
        self._stop_endpoint = f"inproc://bus-stop-{id(self)}"
        self._stop_rx = ctx.socket(zmq.PAIR)
        self._stop_rx.bind(self._stop_endpoint)
        self._stop_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="proxy")
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        poller.register(self._stop_rx, zmq.POLLIN)
        xsub, xpub, counters, check = self.xsub, self.xpub, self.counters, self.check
        allowed = self.gate.allowed
        # The Cython methods themselves: pyzmq's Python-level wrappers (Socket.send
        # looks for routing_id and group on every call) cost as much as the call.
        recv = functools.partial(_BaseSocket.recv, xsub)
        send = functools.partial(_BaseSocket.send, xpub)
        noblock, more, again = zmq.NOBLOCK, zmq.SNDMORE, zmq.Again
        try:
            while True:
                ready = dict(poller.poll())
                if self._stop_rx in ready:
                    return
                if xsub in ready:
                    forwarded = 0
                    try:
                        # Drain what is queued before polling again, up to BURST (then
                        # subscriptions and stop get their turn). Every step here is on
                        # the path of every message on the bus: one recv per frame,
                        # ``Frame.more`` for the shape (recv_multipart asks the socket
                        # for RCVMORE, ~1 µs a frame), one send per frame (frames, not
                        # bytes: the User-Id is a property of the frame).
                        for _ in range(BURST):
                            try:
                                head = recv(noblock, False)
                            except again:
                                break
                            frames = [head]
                            if head.more:
                                # A multipart message arrives whole: its other frames
                                # are already here.
                                frames.append(recv(0, False))
                                while frames[-1].more and len(frames) < 3:
                                    frames.append(recv(0, False))
                                while frames[-1].more:  # nothing past the 3rd is kept
                                    frames[-1] = recv(0, False)
                            reason = check(frames)
                            if reason is not None:
                                self._drop(reason, head.bytes)
                                continue
                            topic = head.bytes
                            try:
                                who = head.get("User-Id")
                            except zmq.ZMQError:  # no identity: allowed nothing (never
                                who = ""  # seen: ZAP names every connection it admits)
                            if allowed(who, topic):
                                send(head, more, False)
                                send(frames[1], 0, False)
                                forwarded += 1
                            else:
                                self._forbidden(who, topic)
                    finally:
                        counters["proxy_forwarded"] += forwarded
                if xpub in ready:
                    # Subscriptions (and unsubscriptions) flow upstream unchecked:
                    # they only choose what a subscriber receives.
                    while True:
                        try:
                            sub = xpub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        xsub.send_multipart(sub)
        except zmq.ContextTerminated:
            pass

    def _drop(self, reason: str, topic: bytes) -> None:
        self.counters[f"proxy_dropped_{reason}"] += 1
        self.counters["proxy_dropped"] += 1
        if self.counters[f"proxy_dropped_{reason}"] == 1:
            logger.warning("bus: dropped a frame ({}), topic {!r}", reason, topic[:64])

    def _forbidden(self, identity: str, topic: bytes) -> None:
        """A key publishing what its role may not: counted per identity (bounded by the
        roster); logged at the 1st, 2nd, 4th, 8th… so a flood cannot fill the disk."""
        self.counters["proxy_dropped_forbidden_topic"] += 1
        self.counters["proxy_dropped"] += 1
        n = self.counters[f"proxy_forbidden_{identity}"] = \
            self.counters[f"proxy_forbidden_{identity}"] + 1
        if n & (n - 1) == 0:
            logger.warning("bus: dropped topic {!r} from {!r}: not in its role "
                           "(btcbot-supervisor roles; {} so far)", topic[:64], identity, n)

    def stop(self) -> None:
        with self._stop_lock:
            tx = self._ctx.socket(zmq.PAIR)
            try:
                tx.connect(self._stop_endpoint)
                tx.send(b"STOP")
            finally:
                tx.close(linger=100)
        if self._thread is not None:
            self._thread.join(2.0)

    def close(self) -> None:
        for sock in (self.xsub, self.xpub, self._stop_rx):
            sock.close(linger=0)


class BusProcess:
    """The bus's runtime: the proxy, a heartbeat on ``hb.bus``, ``control`` and SIGTERM."""

    name = "bus"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.incarnation = new_incarnation()
        self.started_mono = time.monotonic()
        self._sync_ctx = zmq.Context()
        self._ctx = zmq.asyncio.Context()
        self._stop = asyncio.Event()
        self._parent_pid = os.getppid()
        ensure_private_dir(cfg.runtime_path)
        self.auth = load_for(cfg.data_path, cfg.identity(self.name))
        self.proxy = FrameProxy(self._sync_ctx, cfg.bus_pub_endpoint, cfg.bus_sub_endpoint,
                                hwm=cfg.bus.hwm, auth=self.auth)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.proxy.start()
        pub = Publisher(self._ctx, self.cfg.bus_pub_endpoint, self.name, self.incarnation,
                        hwm=self.cfg.bus.hwm, auth=self.auth)
        sub = Subscriber(self._ctx, self.cfg.bus_sub_endpoint, ["control", f"hb.{self.name}"],
                         name=self.name, auth=self.auth)
        joined = asyncio.Event()
        listener = asyncio.create_task(self._listen(sub, joined))
        logger.info("bus ready (incarnation {}, pid {})", self.incarnation, os.getpid())
        try:
            await self._heartbeat_loop(pub, sub, joined)
        finally:
            listener.cancel()
            self._send_heartbeat(pub, sub, "STOPPING", ready=False)
            await asyncio.gather(listener, return_exceptions=True)
            self.proxy.stop()
            sub.close()
            pub.close()
            self.proxy.close()
            self.auth.close()
            self._ctx.destroy(linger=200)
            self._sync_ctx.term()
            logger.info("bus stopped")
        return EXIT_OK

    async def _listen(self, sub: Subscriber, joined: asyncio.Event) -> None:
        while True:
            _, packet = await sub.recv()
            body = packet.body
            if isinstance(body, Heartbeat) and body.actor == self.name:
                joined.set()
            elif isinstance(body, Control) and body.target in ("*", self.name) \
                    and body.command == "shutdown":
                self._stop.set()

    async def _heartbeat_loop(self, pub: Publisher, sub: Subscriber,
                              joined: asyncio.Event) -> None:
        interval = self.cfg.supervisor.heartbeat_interval_s
        while not self._stop.is_set():
            self._send_heartbeat(pub, sub, "READY", ready=True)
            if self._parent_pid > 1 and os.getppid() != self._parent_pid:
                logger.error("bus: parent {} is gone; stopping", self._parent_pid)
                return
            # Until our own heartbeat comes back through the proxy (slow joiner), repeat
            # it quickly so the supervisor sees READY within milliseconds.
            wait = interval if joined.is_set() else min(0.05, interval)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    def _send_heartbeat(self, pub: Publisher, sub: Subscriber, state: str, *,
                        ready: bool) -> None:
        counters = dict(self.proxy.counters)
        counters.update(sub.stats.as_counters())
        counters.update(self.auth.heartbeat_counters())
        pub.publish(Heartbeat(actor=self.name, pid=os.getpid(), state=state, ready=ready,
                              uptime_s=round(time.monotonic() - self.started_mono, 3),
                              counters=counters))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="btcbot-bus")
    parser.add_argument("--config", default="supervisor.toml")
    parser.add_argument("--mode", default=None)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, mode=args.mode)
    except ConfigError as exc:
        print(f"bus: config error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    setup_logging(cfg, "bus")
    try:
        process = BusProcess(cfg)
    except KeysError as exc:
        logger.error("bus: {}", exc)
        print(f"bus: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except zmq.ZMQError as exc:
        logger.error("bus: cannot bind: {}", exc)
        print(f"bus: cannot bind: {exc}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
    sys.exit(asyncio.run(process.run()))


if __name__ == "__main__":
    main()
