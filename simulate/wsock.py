"""The exchange's WebSocket in process: ``exchange_sim``'s own hub (``WsHub``: login,
subscriptions, the public 431/432/422 frames of the market's tick, the private
423/441/451/452 events the engine emits) behind an aiohttp-like session, so the
executor's and marketdata's real ``BtcTurkWebSocket`` (framing, login, reconnects,
backoff, stall detection) talk to it with no socket.

A connection delivers frames in order (TCP), each after the connection's own latency,
drawn once at connect (no random draw per frame: the order in which the hub iterates its
clients then cannot move the random stream; the hub's clients are kept in connect order).
aiohttp's heartbeat is modelled by what it does to ``receive(timeout)``: a ping/pong
arrives after every heartbeat interval of silence (the client's, or the hub's 20 s) and
restarts the read's timeout, so a quiet socket times out only when the caller's timeout
is shorter than that (marketdata's: 10 s against a 20 s heartbeat, as with aiohttp).
What can go wrong (rates from the world's profile): a private frame repeated
(``private_repeat``), the private feed lagging by 1-10 s (``private_late``), one pair's
public frames stopping while the socket stays up (``public_frozen_until``, set by the
world); and the world drops connections and takes them all down with a venue crash.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from exchange_sim.auth_check import AuthChecker
from exchange_sim.faults import FaultRegistry
from exchange_sim.market import PublicTrade
from exchange_sim.ws import WS_VERSION, WsClient, WsHub, _frame

if TYPE_CHECKING:
    from simulate.exchange import InProcessExchange

WS_LATENCY = (0.002, 0.030)  # one way, seconds (as the REST hop)
HUB_HEARTBEAT_S = 20.0  # the hub's own ping interval (exchange_sim.app's WsHub)
ORDER_STEP = 1e-7
PRIVATE_TYPES = ("[423,", "[441,", "[451,", "[452,")


class WsFaults:
    private_repeat = 0.0  # a private frame sent twice
    private_late = 0.0  # the feed lags by 1-10 s from this private frame on

    def __init__(self) -> None:
        # pair -> its public frames (book, diff, trade) are not published until then
        self.public_frozen_until: dict[str, float] = {}


class _InConnectOrder(dict):  # type: ignore[type-arg]
    """``WsHub.clients`` (a set there): the same operations, iterated in connect order,
    so a frame published to several subscribers reaches them in the same order in every
    process (a set of objects iterates by address)."""

    def add(self, client: WsClient) -> None:
        self[client] = None

    def discard(self, client: WsClient) -> None:
        self.pop(client, None)


class _ServerEnd:
    """What the hub's ``WsClient`` writes to (web.WebSocketResponse's subset)."""

    def __init__(self, conn: MemConnection) -> None:
        self.conn = conn

    @property
    def closed(self) -> bool:
        return self.conn.closed

    async def close(self) -> None:
        self.conn.close("closed by the exchange")

    async def send_str(self, text: str) -> None:
        self.conn.to_client(text)


class MemConnection:
    """One WebSocket connection; the client end is aiohttp's ClientWebSocketResponse
    as far as ``BtcTurkWebSocket`` uses it."""

    def __init__(self, hub: SimWsHub, who: str, latency: float,
                 heartbeat: float | None) -> None:
        self.hub = hub
        self.who = who
        self.latency = latency
        # Silence after which a ping/pong arrives (the client's heartbeat or the hub's),
        # the ping's way out and the pong's way back included.
        self.quiet_gap = min(heartbeat or HUB_HEARTBEAT_S, HUB_HEARTBEAT_S) + 2 * latency
        self.closed = False
        self._queue: deque[aiohttp.WSMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._last_at = 0.0
        self.client = WsClient(_ServerEnd(self))  # type: ignore[arg-type]

    # --- the exchange's end ------------------------------------------------------------
    def to_client(self, text: str) -> None:
        if self.closed:
            return
        ex = self.hub.exchange
        loop = ex.loop
        at = max(self._last_at + ORDER_STEP, loop.time() + self.latency)
        if text.startswith(PRIVATE_TYPES):
            f = self.hub.faults
            rng = ex.rng
            repeat, late, lag = rng.random(), rng.random(), rng.uniform(1.0, 10.0)
            if late < f.private_late:
                self.hub.on_fault("private_late", f"{self.who} {lag:.1f}s")
                at += lag
            if repeat < f.private_repeat:
                self.hub.on_fault("private_repeat", f"{self.who} {text[:5]}")
                self._schedule(at, text)
                at += ORDER_STEP
        self._schedule(at, text)

    def _schedule(self, at: float, text: str) -> None:
        self._last_at = at
        self.hub.exchange.loop.call_at(at, self._arrive, text)

    def _arrive(self, text: str) -> None:
        if self.closed:
            return
        self.hub.exchange.trace.add("ws", self.who, text[:5], text.encode())
        self._push(aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, text, None))

    def _push(self, msg: aiohttp.WSMessage) -> None:
        self._queue.append(msg)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self, why: str) -> None:
        """Either end: both sides see it at once (the client reads CLOSED)."""
        if self.closed:
            return
        self.closed = True
        self.hub.drop(self)
        self.hub.exchange.trace.note("ws_closed", self.who, why)
        self._queue.clear()
        self._push(aiohttp.WSMessage(aiohttp.WSMsgType.CLOSED, None, None))

    # --- the client's end (aiohttp.ClientWebSocketResponse) ------------------------------
    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage:  # noqa: ASYNC109 - aiohttp's signature
        while not self._queue:
            if self.closed:
                return aiohttp.WSMessage(aiohttp.WSMsgType.CLOSED, None, None)
            self._waiter = self.hub.exchange.loop.create_future()
            if timeout is None or timeout > self.quiet_gap:
                # A ping/pong comes first and restarts the read (aiohttp consumes it):
                # a quiet socket is not a dead one.
                await self._waiter
            else:
                await asyncio.wait_for(self._waiter, timeout)
        return self._queue.popleft()

    async def send_str(self, text: str) -> None:
        if self.closed:
            raise ConnectionResetError("the connection is closed")
        self.hub.exchange.loop.call_later(self.latency, self.hub.from_client, self, text)

    async def close_client(self) -> None:
        self.close("closed by the client")


class _ClientView:
    """The object ``ws_connect`` returns: the connection's client end."""

    def __init__(self, conn: MemConnection) -> None:
        self._conn = conn

    @property
    def closed(self) -> bool:
        return self._conn.closed

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage:  # noqa: ASYNC109 - aiohttp's signature
        return await self._conn.receive(timeout)

    async def send_str(self, text: str) -> None:
        await self._conn.send_str(text)

    async def close(self) -> bool:
        await self._conn.close_client()
        return True


class SimWsHub:
    """The exchange's WebSocket side: one ``WsHub`` per venue process (a crash closes
    every connection; the restarted venue makes a new hub on its new engine)."""

    def __init__(self, exchange: InProcessExchange, credentials: dict[str, str]) -> None:
        self.exchange = exchange
        self.faults = WsFaults()
        self.auth = AuthChecker(credentials)
        self.conns: list[MemConnection] = []  # in connect order (a list: deterministic)
        self.hub: WsHub | None = None
        # The world's fault counter (kind, detail); traced only when none is attached.
        self.on_fault: Callable[[str, str], None] = \
            lambda kind, detail: exchange.trace.note("fault", kind, detail)
        self._writers: dict[MemConnection, asyncio.Task[None]] = {}

    def boot(self) -> None:
        ex = self.exchange
        self.hub = WsHub(ex.market, ex.engine, self.auth, FaultRegistry(0),
                         heartbeat_s=HUB_HEARTBEAT_S)
        self.hub.clients = _InConnectOrder()  # type: ignore[assignment]
        # The hub's own publish (its clients now iterate in connect order).
        ex.engine.emit_private = self.hub.publish_private

    def _public_frozen(self, symbol: str) -> bool:
        return self.faults.public_frozen_until.get(symbol, 0.0) > self.exchange.loop.time()

    def publish_trade(self, symbol: str, trade: PublicTrade | None) -> None:
        """The walk's public trade (422, and 428 candles), before resting orders are
        matched, as ``exchange_sim.app.market_tick``; nothing while the pair's public
        feed is frozen (the socket stays up)."""
        if trade is not None and self.hub is not None and not self._public_frozen(symbol):
            self.hub.publish_trade(symbol, trade)

    def publish_book(self, symbol: str) -> None:
        """The pair's book (431) and its diff (432) after the tick's matching."""
        if self.hub is not None and not self._public_frozen(symbol):
            self.hub.publish_book(symbol)
            self.hub.publish_obdiff(symbol)

    def publish_ticker(self, now_ms: int) -> None:
        """The tick's 401/402, only when someone subscribed to a ticker (the rows are
        computed for every pair otherwise, for nobody: no simulated client reads them)."""
        hub = self.hub
        if hub is not None and any(key[0] == "ticker" for c in hub.clients for key in c.subs):
            hub.publish_ticker(now_ms)

    def crash(self) -> None:
        for conn in list(self.conns):
            conn.close("the exchange process died")
        self.hub = None

    def drop(self, conn: MemConnection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
        if self.hub is not None:
            self.hub.clients.discard(conn.client)
        writer = self._writers.pop(conn, None)
        if writer is not None:
            writer.cancel()

    def from_client(self, conn: MemConnection, text: str) -> None:
        if conn.closed or self.hub is None:
            return
        self.exchange.trace.add("ws_in", conn.who, text[:5], b"")  # a login carries a key
        self.hub._message(conn.client, text)

    async def connect(self, who: str, heartbeat: float | None) -> _ClientView:
        ex = self.exchange
        latency = ex.rng.uniform(*WS_LATENCY)
        await asyncio.sleep(latency)
        if ex.down or self.hub is None:
            ex.trace.note("ws_refused", who, "")
            raise aiohttp.ClientConnectionError("simulated: the exchange process is down")
        conn = MemConnection(self, who, latency, heartbeat)
        self.conns.append(conn)
        self.hub.clients.add(conn.client)
        self._writers[conn] = ex.loop.create_task(conn.client.writer())
        conn.client.send(_frame(991, WS_VERSION))
        ex.trace.note("ws_open", who, "")
        return _ClientView(conn)


class MemWsSession:
    """``aiohttp.ClientSession`` as ``BtcTurkWebSocket`` uses it: ``ws_connect``."""

    closed = False

    def __init__(self, ws: SimWsHub, who: str) -> None:
        self.ws = ws
        self.who = who

    async def ws_connect(self, url: str, *, heartbeat: float | None = None,
                         **_kwargs: Any) -> _ClientView:
        return await self.ws.connect(self.who, heartbeat)

    async def close(self) -> None:
        return None
