"""BTCTurk WebSocket feed: framing, login, subscriptions, reconnect, stall detection.

Every frame is ``[type, {...}]``. We subscribe with 151 (channel string, event pair) and log
in with 114 (signature over publicKey + nonce). The connection is considered dead when no
message arrived for ``stall_timeout_s`` (the exchange keeps sockets open while silent),
and then we reconnect with capped exponential backoff plus jitter and resubscribe.
Connects are paced on top of the backoff (``ConnectPacer``): BTCTurk allows 15 connection
requests a minute per IP and then blocks the IP for 60 s, and a feed that connects, gets
one message and is dropped would otherwise reconnect every backoff_initial_s.
Consumers get typed events; ``WsConnected``/``WsDisconnected`` tell them when to fall back
to REST. Malformed frames are counted and skipped: a bad message never kills the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
from loguru import logger

from .auth import sign
from .models import Level, UserTrade, _WUserTrade, user_trade_from_wire

WS_LOGIN_NONCE = 3000  # the docs' constant; the signature covers publicKey + nonce

# Connects per feed per minute. BTCTurk: 15 connection requests a minute per IP, then the
# IP is blocked 60 s (subscriptions do not count). One host runs two feeds (marketdata's
# public one and the executor's private one): 2 x 6 = 12 leaves room for a one-off tool.
CONNECTS_PER_MIN = 6


class ConnectPacer:
    """At most ``per_min`` connection attempts in any minute, and none before the
    ``Retry-After`` of a refused one (pure: callers pass the loop's time)."""

    PERIOD_S = 61.0  # a minute plus a margin for the request's way to the exchange

    def __init__(self, per_min: int = CONNECTS_PER_MIN) -> None:
        self.per_min = max(1, per_min)
        self.attempts: deque[float] = deque()
        self.not_before = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next attempt (0: go)."""
        while self.attempts and now - self.attempts[0] >= self.PERIOD_S:
            self.attempts.popleft()
        wait = self.not_before - now
        if len(self.attempts) >= self.per_min:
            wait = max(wait, self.attempts[0] + self.PERIOD_S - now)
        return max(0.0, wait)

    def attempted(self, now: float) -> None:
        self.attempts.append(now)

    def refused(self, now: float, retry_after_s: float) -> None:
        self.not_before = max(self.not_before, now + retry_after_s)


def retry_after_s(headers: Mapping[str, str] | None, default: float) -> float:
    """A 429's ``Retry-After`` (seconds), or ``default`` when absent or unreadable."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", default)))
    except ValueError:
        return default


# --------------------------------------------------------------------------- events


class WsConnected(msgspec.Struct, frozen=True):
    url: str
    connects: int
    mono_ns: int


class WsDisconnected(msgspec.Struct, frozen=True):
    url: str
    reason: str
    mono_ns: int


class OrderBookSnapshot(msgspec.Struct, frozen=True):
    pair: str
    change_set: int
    bids: list[Level]  # best first
    asks: list[Level]  # best first
    received_mono_ns: int


class DiffLevel(msgspec.Struct, frozen=True):
    price: Decimal
    amount: Decimal
    change: int  # 0 updated, 1 new, 3 deleted


class OrderBookDiff(msgspec.Struct, frozen=True):
    pair: str
    change_set: int
    bids: list[DiffLevel]
    asks: list[DiffLevel]
    received_mono_ns: int


class TradeEvent(msgspec.Struct, frozen=True):
    pair: str
    trade_id: str
    price: Decimal
    amount: Decimal
    side: str  # "buy" (S=0) or "sell" (S=1)
    timestamp_ms: int
    snapshot: bool  # True when it came from the 421 join snapshot


class TickerEvent(msgspec.Struct, frozen=True):
    pair: str
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    high: Decimal | None
    low: Decimal | None
    open: Decimal | None
    volume: Decimal | None
    daily_percent: Decimal | None


class OrderMatch(msgspec.Struct, frozen=True):
    """441: one (partial) fill of our order. No timestamp on the wire."""

    order_id: int
    pair: str
    side: str
    price: Decimal
    amount: Decimal
    client_order_id: str | None


class _OrderEvent(msgspec.Struct, frozen=True):
    """Shared shape of 451 and 452 (no timestamp on the wire)."""

    order_id: int
    pair: str
    side: str | None
    method: str
    price: Decimal
    amount: Decimal
    num_left: Decimal | None
    client_order_id: str | None


class OrderInsert(_OrderEvent, frozen=True):
    """451: our order was accepted into the book."""


class OrderDelete(_OrderEvent, frozen=True):
    """452: our order left the book (cancel confirmation; ``num_left`` = unfilled part)."""


WsEvent = (
    WsConnected
    | WsDisconnected
    | OrderBookSnapshot
    | OrderBookDiff
    | TradeEvent
    | TickerEvent
    | UserTrade
    | OrderMatch
    | OrderInsert
    | OrderDelete
)

# --------------------------------------------------------------------------- wire


class _WLevel(msgspec.Struct):
    P: Decimal
    A: Decimal


class _WDiffLevel(msgspec.Struct):
    P: Decimal
    A: Decimal
    CP: int = 0


class _W431(msgspec.Struct):
    PS: str
    CS: int = 0
    AO: list[_WLevel] = []
    BO: list[_WLevel] = []


class _W432(msgspec.Struct):
    PS: str
    CS: int = 0
    AO: list[_WDiffLevel] = []
    BO: list[_WDiffLevel] = []


class _W422(msgspec.Struct):
    I: str | int  # noqa: E741 - wire key
    P: Decimal
    A: Decimal
    D: Decimal
    S: int = 0
    PS: str = ""


class _W421(msgspec.Struct):
    items: list[_W422]
    symbol: str = ""
    event: str = ""


class _W402(msgspec.Struct):
    PS: str
    B: Decimal | None = None
    A: Decimal | None = None
    LA: Decimal | None = None
    H: Decimal | None = None
    L: Decimal | None = None
    O: Decimal | None = None  # noqa: E741 - wire key
    V: Decimal | None = None
    DP: Decimal | None = None


class _W401(msgspec.Struct):
    items: list[_W402]


class _W441(msgspec.Struct):
    id: int
    isBid: bool
    amount: Decimal
    price: Decimal
    symbol: str = ""
    clientId: str | None = None


class _W451(msgspec.Struct):
    id: int
    price: Decimal
    amount: Decimal
    symbol: str = ""
    method: int = 0
    orderType: int | None = None
    numLeft: Decimal | None = None
    newOrderClientId: str | None = None


class _WAck(msgspec.Struct):
    ok: bool = False
    message: str | None = None


_METHODS = {0: "limit", 1: "market", 2: "stoplimit", 3: "stopmarket"}
_frame_decoder = msgspec.json.Decoder(tuple[int, msgspec.Raw])


def _levels(rows: list[_WLevel]) -> list[Level]:
    return [Level(price=r.P, amount=r.A) for r in rows]


def _diff(rows: list[_WDiffLevel]) -> list[DiffLevel]:
    return [DiffLevel(price=r.P, amount=r.A, change=r.CP) for r in rows]


def _trade(w: _W422, pair: str, snapshot: bool) -> TradeEvent:
    return TradeEvent(
        pair=w.PS or pair,
        trade_id=str(w.I),
        price=w.P,
        amount=w.A,
        side="sell" if w.S == 1 else "buy",
        timestamp_ms=int(w.D),
        snapshot=snapshot,
    )


def _order_event(w: _W451, cls: type[_OrderEvent]) -> _OrderEvent:
    side = None if w.orderType is None else ("sell" if w.orderType == 1 else "buy")
    return cls(
        order_id=w.id,
        pair=w.symbol,
        side=side,
        method=_METHODS.get(w.method, str(w.method)),
        price=w.price,
        amount=w.amount,
        num_left=w.numLeft,
        client_order_id=w.newOrderClientId,
    )


def parse_frame(raw: bytes | str, now_ns: int | None = None) -> list[WsEvent] | None:
    """Typed events of one frame; [] for frames we ignore; raises on malformed frames.
    ``now_ns``: the receive stamp (monotonic), read here when not given."""
    msg_type, body = _frame_decoder.decode(raw)
    now = time.monotonic_ns() if now_ns is None else now_ns
    dec = msgspec.json.decode
    if msg_type == 431:
        w = dec(body, type=_W431)
        return [OrderBookSnapshot(w.PS, w.CS, _levels(w.BO), _levels(w.AO), now)]
    if msg_type == 432:
        d = dec(body, type=_W432)
        return [OrderBookDiff(d.PS, d.CS, _diff(d.BO), _diff(d.AO), now)]
    if msg_type == 422:
        return [_trade(dec(body, type=_W422), "", False)]
    if msg_type == 421:
        s = dec(body, type=_W421)
        return [_trade(item, s.symbol or s.event, True) for item in s.items]
    if msg_type in (401, 402):
        rows = dec(body, type=_W401).items if msg_type == 401 else [dec(body, type=_W402)]
        return [TickerEvent(r.PS, r.B, r.A, r.LA, r.H, r.L, r.O, r.V, r.DP) for r in rows]
    if msg_type == 423:
        return [user_trade_from_wire(dec(body, type=_WUserTrade))]
    if msg_type == 441:
        m = dec(body, type=_W441)
        side = "buy" if m.isBid else "sell"
        return [OrderMatch(m.id, m.symbol, side, m.price, m.amount, m.clientId)]
    if msg_type == 451:
        return [_order_event(dec(body, type=_W451), OrderInsert)]
    if msg_type == 452:
        return [_order_event(dec(body, type=_W451), OrderDelete)]
    return None  # control frames (991, 100, 114) and types we do not use


class _Stalled(Exception):
    pass


class BtcTurkWebSocket:
    """Long-running feed; ``await run()`` until ``stop()``. Not re-entrant."""

    def __init__(
        self,
        url: str,
        *,
        subscriptions: list[tuple[str, str]],
        on_event: Callable[[Any], Awaitable[None]],
        api_key: str | None = None,
        api_secret: str | None = None,
        stall_timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        heartbeat_s: float | None = 20.0,
        connects_per_min: int = CONNECTS_PER_MIN,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        # The clock's two readings (injected: the deterministic simulation's is virtual).
        self._mono_ns = mono_ns
        self._wall_ns = wall_ns
        self.url = url
        self.subscriptions = list(subscriptions)
        self.on_event = on_event
        self.api_key = api_key
        self.api_secret = api_secret
        self.stall_timeout_s = stall_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_s = heartbeat_s
        self.pacer = ConnectPacer(connects_per_min)
        self.counters: dict[str, int] = {
            "connects": 0,
            "reconnects": 0,
            "connect_waits": 0,  # attempts held back by the pacer or a 429's Retry-After
            "connect_refused": 0,  # connects the exchange answered 429
            "messages": 0,
            "malformed": 0,
            "stalls": 0,
            "ignored": 0,
            "handler_errors": 0,
            "subscribe_failed": 0,
            "login_ok": 0,
            "login_failed": 0,
        }
        self.logged_in = False
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stop = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def stop(self) -> None:
        """Ask ``run()`` to finish; safe to call from the loop at any time."""
        self._stop.set()
        if self._ws is not None and not self._ws.closed:
            asyncio.get_running_loop().create_task(self._ws.close())

    async def run(self) -> None:
        self._stop.clear()
        attempt = 0
        try:
            while not self._stop.is_set():
                loop = asyncio.get_running_loop()
                wait = self.pacer.delay(loop.time())
                if wait > 0:
                    self.counters["connect_waits"] += 1
                    await self._sleep(wait)
                    continue
                self.pacer.attempted(loop.time())
                useful = False
                try:
                    useful = await self._connection_once()
                    reason = "closed"
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status == 429:
                        # The IP's connects are spent (or blocked): nothing before Retry-After.
                        self.counters["connect_refused"] += 1
                        self.pacer.refused(loop.time(), retry_after_s(exc.headers, 60.0))
                    reason = f"handshake refused: HTTP {exc.status}"
                except _Stalled:
                    self.counters["stalls"] += 1
                    reason = "stalled"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                await self._after_disconnect(reason)
                attempt = 0 if useful else attempt + 1
                if not self._stop.is_set():
                    await self._sleep_backoff(attempt)
        finally:
            await self._close_ws()
            if self._own_session and self._session is not None:
                await self._session.close()
                self._session = None

    # ------------------------------------------------------------------ internals

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, attempt - 1)))
        return min(self.backoff_max_s, base * (1.0 + random.random() * 0.25))

    async def _sleep_backoff(self, attempt: int) -> None:
        await self._sleep(self._backoff(attempt))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or return at once on ``stop()``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _after_disconnect(self, reason: str) -> None:
        was_connected = self._ws is not None
        await self._close_ws()
        self.logged_in = False
        if was_connected:
            logger.warning("btcturk ws disconnected from {}: {}", self.url, reason)
            await self._emit(WsDisconnected(self.url, reason, self._mono_ns()))

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def _connection_once(self) -> bool:
        """One connection's life. Returns True if it delivered any data message."""
        ws = await self._get_session().ws_connect(
            self.url,
            heartbeat=self.heartbeat_s,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            autoping=True,
        )
        self._ws = ws
        self.counters["connects"] += 1
        if self.counters["connects"] > 1:
            self.counters["reconnects"] += 1
        await self._send_login_and_subscriptions(ws)
        await self._emit(WsConnected(self.url, self.counters["connects"], self._mono_ns()))
        useful = False
        while not self._stop.is_set():
            try:
                msg = await ws.receive(timeout=self.stall_timeout_s)
            except TimeoutError as exc:
                raise _Stalled() from exc
            if msg.type == aiohttp.WSMsgType.TEXT:
                useful = await self._handle_text(msg.data) or useful
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                break
        return useful

    async def _send_login_and_subscriptions(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self.api_key and self.api_secret:
            login = {
                "type": 114,
                "publicKey": self.api_key,
                "timestamp": self._wall_ns() // 1_000_000,
                "nonce": WS_LOGIN_NONCE,
                "signature": sign(self.api_key, self.api_secret, WS_LOGIN_NONCE),
            }
            await ws.send_str(msgspec.json.encode([114, login]).decode())
        for channel, event in self.subscriptions:
            sub = {"type": 151, "channel": channel, "event": event, "join": True}
            await ws.send_str(msgspec.json.encode([151, sub]).decode())

    async def _handle_text(self, data: str) -> bool:
        self.counters["messages"] += 1
        try:
            events = parse_frame(data, self._mono_ns())
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
            self.counters["malformed"] += 1
            return False
        if events is None:
            self._handle_control(data)
            return False
        for event in events:
            await self._emit(event)
        return True

    def _handle_control(self, data: str) -> None:
        try:
            msg_type, body = _frame_decoder.decode(data)
            ack = msgspec.json.decode(body, type=_WAck) if msg_type in (100, 114) else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.counters["malformed"] += 1
            return
        if ack is None:
            self.counters["ignored"] += 1
        elif msg_type == 114:
            self.logged_in = ack.ok
            self.counters["login_ok" if ack.ok else "login_failed"] += 1
        elif not ack.ok:
            self.counters["subscribe_failed"] += 1
            logger.warning("btcturk ws subscription refused: {}", ack.message)

    async def _emit(self, event: Any) -> None:
        try:
            await self.on_event(event)
        except Exception:  # a consumer bug must not take the feed down
            self.counters["handler_errors"] += 1
            logger.exception("btcturk ws on_event handler failed")
