"""How an actor gets its bus endpoints: one small factory interface, two implementations.

``ZmqBus`` is production (ZeroMQ sockets through the proxy, ``bus/transport.py``);
``simulate/membus.py`` is the deterministic simulation's in-memory bus with the same
delivery semantics. The actor runtime and the actors only ever ask this factory, so the
same actor code runs on either.
"""

from __future__ import annotations

from typing import Any, Protocol

import zmq.asyncio

from bus.messages import Msg, Packet, ReplyBody
from bus.transport import (
    Handler,
    Publisher,
    RequestClient,
    RequestServer,
    Subscriber,
    SubscriberStats,
    new_incarnation,
)
from shared.clock import Clock


class PublisherLike(Protocol):
    def publish(self, body: Msg, topic: str | None = None) -> None: ...

    def close(self) -> None: ...


class SubscriberLike(Protocol):
    stats: SubscriberStats

    def subscribe(self, topic: str) -> None: ...

    async def recv(self) -> tuple[str, Packet]: ...

    def close(self) -> None: ...


class ServerLike(Protocol):
    stats: dict[str, int]

    async def serve(self) -> None: ...

    def close(self) -> None: ...


class ClientLike(Protocol):
    stats: dict[str, int]

    async def request(self, body: Msg, *, request_id: str | None = None,
                      timeout_s: float | None = None, retries: int | None = None,
                      after_send: Any = None) -> ReplyBody | None: ...

    def close(self) -> None: ...


class Bus(Protocol):
    def new_incarnation(self) -> str: ...

    def publisher(self, endpoint: str, source: str, incarnation: str, *, hwm: int,
                  clock: Clock) -> PublisherLike: ...

    def subscriber(self, endpoint: str, topics: list[str], *, hwm: int, name: str,
                   clock: Clock) -> SubscriberLike: ...

    def server(self, endpoint: str, handler: Handler, *, commands: Any) -> ServerLike: ...

    def client(self, endpoint: str, sender: str, *, timeout_s: float,
               retries: int) -> ClientLike: ...

    def close(self) -> None: ...


class ZmqBus:
    """Production: ZeroMQ sockets in one asyncio context per process."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()

    def new_incarnation(self) -> str:
        return new_incarnation()

    def publisher(self, endpoint: str, source: str, incarnation: str, *, hwm: int,
                  clock: Clock) -> Publisher:
        return Publisher(self.ctx, endpoint, source, incarnation, hwm=hwm, clock=clock)

    def subscriber(self, endpoint: str, topics: list[str], *, hwm: int, name: str,
                   clock: Clock) -> Subscriber:
        return Subscriber(self.ctx, endpoint, topics, hwm=hwm, name=name, clock=clock)

    def server(self, endpoint: str, handler: Handler, *, commands: Any) -> RequestServer:
        return RequestServer(self.ctx, endpoint, handler, commands=commands)

    def client(self, endpoint: str, sender: str, *, timeout_s: float,
               retries: int) -> RequestClient:
        return RequestClient(self.ctx, endpoint, sender, timeout_s=timeout_s, retries=retries)

    def close(self) -> None:
        self.ctx.destroy(linger=200)
