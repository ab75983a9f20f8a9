"""The in-memory bus: the production transport's semantics without sockets.

- PUB/SUB: the proxy's roles check (``PublishGate``) drops what an identity may not
  publish; a subscriber gets what is published after it subscribed (no history), in
  publish order per publisher, after a small seeded latency; under faults a message may
  be lost (PUB/SUB's documented loss). Frames are encoded and decoded exactly as on the
  wire (``PacketStamper``, ``PacketInbox``: same envelopes, sequences, gap detection).
- REQ/REP: Lazy Pirate like ``RequestClient`` (timeout, bounded retries, the same request
  id on every retry, a late reply to an abandoned attempt is discarded); the server side
  is ``CommandAnswerer`` (reply cache by request id). Under faults a request or its reply
  may be lost, or the reply may come late.
- An actor's endpoints die with it (``MemBus.close`` / a crash): nothing it had queued or
  not yet answered is delivered, as when a process is killed.

A crash "at a message boundary" is decided here: before a message is handed to an actor
(data or command), the world may crash it instead (``Network.boundary``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from bus.messages import CommandRequest, Msg, Packet, ReplyBody, packet_encoder, reply_decoder
from bus.roles import PublishGate
from bus.transport import (
    CommandAnswerer,
    Handler,
    PacketInbox,
    PacketStamper,
    RequestFailed,
    SubscriberStats,
)
from shared.clock import Clock
from simulate.trace import Trace

# One-way latencies (seconds): a local ipc hop through the proxy is tens of microseconds.
PUB_LATENCY = (20e-6, 200e-6)
REQ_LATENCY = (20e-6, 200e-6)
ORDER_STEP = 1e-7  # seconds between two deliveries of one publisher, at least


class NetFaults:
    """The bus's fault rates (per message), set by the world from the profile. A rate of
    ``DRAWN_NEVER`` (negative) is a fault switched off by ``--without``: its random
    number is still drawn, so every other fault keeps its place in the random stream."""

    pubsub_loss = 0.0
    req_loss = 0.0  # a request never arrives
    reply_loss = 0.0  # the answer never comes back
    reply_late = 0.0  # the answer comes after the caller's timeout
    crash_at_boundary = 0.0  # per message handed to an actor


class Network:
    def __init__(self, loop: asyncio.AbstractEventLoop, rng: Any, trace: Trace) -> None:
        self.loop = loop
        self.rng = rng
        self.trace = trace
        self.faults = NetFaults()
        self.subscribers: list[MemSubscriber] = []
        self.servers: dict[str, MemServer] = {}
        self.gate = PublishGate()  # the proxy's per-frame roles check
        self.refused = 0
        self._ids = 0
        # The world's hook: crash ``actor`` now (returns True when it did).
        self.on_boundary: Callable[[str], bool] = lambda _actor: False
        self.on_publish: Callable[[str, str, bytes], None] = lambda _s, _t, _p: None
        self.on_request: Callable[[str, str, Msg, int], None] = lambda _s, _e, _b, _a: None

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    def boundary(self, actor: str) -> bool:
        """A message is about to be handed to ``actor``: crash it there instead?"""
        p = self.faults.crash_at_boundary
        return bool(p) and self.rng.random() < p and self.on_boundary(actor)

    def publish(self, pub: MemPublisher, topic: bytes, payload: bytes) -> None:
        if not self.gate.allowed(pub.source, topic):
            # The proxy drops what the roles do not let this identity publish.
            self.refused += 1
            self.trace.add("refused", pub.source, topic.decode(errors="replace"), b"")
            return
        topic_s = topic.decode()
        self.trace.add("pub", pub.source, topic_s, payload)
        self.on_publish(pub.source, topic_s, payload)
        targets = []
        loss = self.faults.pubsub_loss
        for sub in self.subscribers:
            if not topic_s.startswith(sub.prefixes):
                continue
            if loss and self.rng.random() < loss:
                self.trace.add("lost", pub.source, topic_s, b"")
                continue
            targets.append(sub)
        if not targets:
            return
        # One hop through the proxy: every subscriber gets the message after the same
        # latency, never before the publisher's previous message (per-publisher order).
        # Strictly after it: asyncio orders timers of equal time by heap position, not
        # by when they were scheduled.
        at = max(pub.last_at + ORDER_STEP, self.loop.time() + self.rng.uniform(*PUB_LATENCY))
        pub.last_at = at
        self.loop.call_at(at, _deliver, targets, topic, payload)


def _deliver(targets: list[MemSubscriber], topic: bytes, payload: bytes) -> None:
    for sub in targets:
        sub.push(topic, payload)


class MemPublisher(PacketStamper):
    def __init__(self, net: Network, source: str, incarnation: str, clock: Clock) -> None:
        super().__init__(source, incarnation, clock)
        self.net = net
        self.alive = True
        self.last_at = 0.0  # virtual time of its last delivery

    def publish_raw(self, topic: bytes, payload: bytes) -> None:
        if self.alive:
            self.net.publish(self, topic, payload)

    def close(self) -> None:
        self.alive = False


class MemSubscriber(PacketInbox):
    def __init__(self, net: Network, topics: list[str], *, hwm: int, name: str,
                 clock: Clock) -> None:
        super().__init__(name=name, clock=clock)
        self.net = net
        self.prefixes = tuple(topics)
        self.hwm = hwm
        self.queue: deque[tuple[bytes, bytes]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.alive = True
        net.subscribers.append(self)

    def subscribe(self, topic: str) -> None:
        self.prefixes = (*self.prefixes, topic)

    def push(self, topic: bytes, payload: bytes) -> None:
        if not self.alive:
            return
        if len(self.queue) >= self.hwm:
            return  # SUB drops at its high-water mark
        self.queue.append((topic, payload))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def recv(self) -> tuple[str, Packet]:
        while True:
            while not self.queue:
                self._waiter = self.net.loop.create_future()
                await self._waiter
            topic, payload = self.queue.popleft()
            if self.net.boundary(self.name):
                await asyncio.Future()  # crashed: this task is being cancelled
            decoded = self.decode([topic, payload])
            if decoded is not None:
                return decoded

    def close(self) -> None:
        self.alive = False
        self.queue.clear()
        if self in self.net.subscribers:
            self.net.subscribers.remove(self)


class MemServer(CommandAnswerer):
    """``CommandAnswerer`` (roles check included) behind the in-memory network; the
    caller's identity is the calling actor's, as CURVE would authenticate it."""

    def __init__(self, net: Network, endpoint: str, name: str, handler: Handler, *,
                 commands: Any) -> None:
        super().__init__(handler, name, commands=commands)
        self.net = net
        self.endpoint = endpoint
        self.alive = True
        self._tasks: set[asyncio.Task[Any]] = set()
        net.servers[endpoint] = self

    async def serve(self) -> None:
        await asyncio.Future()  # requests arrive through Network; nothing to poll

    def receive(self, payload: bytes, caller: str, reply_to: asyncio.Future[bytes],
                late: float) -> None:
        if not self.alive:
            return
        if self.net.boundary(self.name):
            return
        task = self.net.loop.create_task(self._answer(payload, caller, reply_to, late))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, payload: bytes, caller: str, reply_to: asyncio.Future[bytes],
                      late: float) -> None:
        reply = await self.answer(payload, caller)
        if not self.alive:
            return  # died while answering: the reply never leaves
        net = self.net
        if net.faults.reply_loss and net.rng.random() < net.faults.reply_loss:
            net.trace.add("reply_lost", self.name, "", b"")
            return
        delay = net.rng.uniform(*REQ_LATENCY) + late
        net.loop.call_later(delay, _resolve, reply_to, reply)

    def close(self) -> None:
        self.alive = False
        for task in self._tasks:
            task.cancel()
        if self.net.servers.get(self.endpoint) is self:
            del self.net.servers[self.endpoint]


def _resolve(future: asyncio.Future[bytes], reply: bytes) -> None:
    if not future.done():
        future.set_result(reply)


class MemClient:
    """``RequestClient``'s behaviour over the in-memory network."""

    def __init__(self, net: Network, endpoint: str, sender: str, *, timeout_s: float,
                 retries: int) -> None:
        self.net = net
        self.endpoint = endpoint
        self.target = endpoint.rsplit("/", 1)[-1]  # the trace names no temporary path
        self.sender = sender
        self.timeout_s = timeout_s
        self.retries = retries
        self._lock = asyncio.Lock()
        self.stats = {"requests": 0, "retries": 0, "failures": 0}
        self.alive = True

    async def request(
        self, body: Msg, *, request_id: str | None = None, timeout_s: float | None = None,
        retries: int | None = None, after_send: Callable[[], None] | None = None,
    ) -> ReplyBody | None:
        net = self.net
        request_id = request_id or net.next_id(self.sender)
        payload = packet_encoder.encode(CommandRequest(request_id, self.sender, body))
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.retries if retries is None else retries)
        async with self._lock:
            self.stats["requests"] += 1
            for attempt in range(attempts):
                if attempt:
                    self.stats["retries"] += 1
                reply_to: asyncio.Future[bytes] = net.loop.create_future()
                self._send(payload, body, reply_to, timeout, attempt)
                if after_send is not None:
                    after_send()
                    after_send = None
                try:
                    raw = await asyncio.wait_for(reply_to, timeout)
                except TimeoutError:
                    continue
                reply = reply_decoder.decode(raw)
                if reply.request_id != request_id:
                    continue
                if not reply.ok:
                    raise RequestFailed(reply.error)
                return reply.body
            self.stats["failures"] += 1
            raise RequestFailed(
                f"no reply from {self.target} after {attempts} attempts of {timeout:.1f}s")

    def _send(self, payload: bytes, body: Msg, reply_to: asyncio.Future[bytes],
              timeout: float, attempt: int) -> None:
        net = self.net
        if not self.alive:
            return
        net.trace.add("req", self.sender, self.target, payload)
        server = net.servers.get(self.endpoint)
        if server is None:
            return  # nobody bound there (the actor is down): the caller times out
        if net.faults.req_loss and net.rng.random() < net.faults.req_loss:
            net.trace.add("req_lost", self.sender, self.target, b"")
            return
        late = 0.0
        if net.faults.reply_late and net.rng.random() < net.faults.reply_late:
            late = timeout * net.rng.uniform(1.0, 2.0)
        net.on_request(self.sender, self.endpoint, body, attempt)
        net.loop.call_later(net.rng.uniform(*REQ_LATENCY), server.receive, payload,
                            self.sender, reply_to, late)

    def close(self) -> None:
        self.alive = False


class MemBus:
    """One actor incarnation's view of the network (``bus.wiring.Bus``)."""

    def __init__(self, net: Network, actor: str, incarnation: str) -> None:
        self.net = net
        self.actor = actor
        self.incarnation = incarnation
        self._closables: list[Any] = []

    def new_incarnation(self) -> str:
        return self.incarnation

    def publisher(self, endpoint: str, source: str, incarnation: str, *, hwm: int,
                  clock: Clock) -> MemPublisher:
        pub = MemPublisher(self.net, source, incarnation, clock)
        self._closables.append(pub)
        return pub

    def subscriber(self, endpoint: str, topics: list[str], *, hwm: int, name: str,
                   clock: Clock) -> MemSubscriber:
        sub = MemSubscriber(self.net, topics, hwm=hwm, name=name, clock=clock)
        self._closables.append(sub)
        return sub

    def server(self, endpoint: str, handler: Handler, *, commands: Any) -> MemServer:
        server = MemServer(self.net, endpoint, self.actor, handler, commands=commands)
        self._closables.append(server)
        return server

    def client(self, endpoint: str, *, server: str, timeout_s: float,
               retries: int) -> MemClient:
        client = MemClient(self.net, endpoint, self.actor, timeout_s=timeout_s,
                           retries=retries)
        self._closables.append(client)
        return client

    def close(self) -> None:
        for c in self._closables:
            c.close()
        self._closables.clear()


__all__ = ["MemBus", "Network", "SubscriberStats"]
