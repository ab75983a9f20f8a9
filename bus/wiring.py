"""How an actor gets its bus endpoints: one small factory interface, two implementations.

``ZmqBus`` is production (ZeroMQ sockets through the proxy, ``bus/transport.py``);
``simulate/membus.py`` is the deterministic simulation's in-memory bus with the same
delivery semantics. The actor runtime and the actors only ever ask this factory, so the
same actor code runs on either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import zmq.asyncio

from bus.auth import BusAuth
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

    def client(self, endpoint: str, *, server: str, timeout_s: float,
               retries: int) -> ClientLike: ...

    def close(self) -> None: ...


class ZmqBus:
    """Production: ZeroMQ sockets in one asyncio context per process, authenticated with
    the actor's CURVE identity (``auth``: loaded when the first socket opens)."""

    def __init__(self, auth: Callable[[], BusAuth]) -> None:
        self.ctx = zmq.asyncio.Context()
        self._auth = auth

    def new_incarnation(self) -> str:
        return new_incarnation()

    def publisher(self, endpoint: str, source: str, incarnation: str, *, hwm: int,
                  clock: Clock) -> Publisher:
        return Publisher(self.ctx, endpoint, source, incarnation, hwm=hwm, clock=clock,
                         auth=self._auth())

    def subscriber(self, endpoint: str, topics: list[str], *, hwm: int, name: str,
                   clock: Clock) -> Subscriber:
        return Subscriber(self.ctx, endpoint, topics, hwm=hwm, name=name, clock=clock,
                          auth=self._auth())

    def server(self, endpoint: str, handler: Handler, *, commands: Any) -> RequestServer:
        return RequestServer(self.ctx, endpoint, handler, commands=commands,
                             auth=self._auth())

    def client(self, endpoint: str, *, server: str, timeout_s: float,
               retries: int) -> RequestClient:
        return RequestClient(self.ctx, endpoint, self._auth(), server=server,
                             timeout_s=timeout_s, retries=retries)

    def close(self) -> None:
        self.ctx.destroy(linger=200)
