"""BTCTurk's WebSocket feed: subscriptions, login, and the public and private channels.

Frames are ``[type, body]`` arrays as on BTCTurk. Each connection has a writer task that
drains a bounded queue, so a publisher never blocks on a slow reader; a reader that falls
too far behind is disconnected, as the real feed does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from .auth_check import AuthChecker
from .engine import Engine
from .faults import FaultRegistry
from .history import DAY_S
from .market import Book, Market, PublicTrade
from .rate_limits import WsConnectLimiter
from .responses import encode
from .views import ticker_row

WS_VERSION = {"type": 991, "current": "6.0.0", "min": "2.3.0"}
WS_QUEUE_MAX = 20000
BOOK_LEVELS = 25
# tradeview (428) resolutions BTCTurk documents; a month is not a fixed-length bucket,
# so "1M" is refused (ok:false) rather than approximated.
TRADEVIEW_RESOLUTIONS = {"1": 60, "5": 300, "15": 900, "30": 1800, "60": 3600, "240": 14400,
                         "1D": DAY_S, "1W": 7 * DAY_S}


class WsClient:
    """One WS connection; a writer task drains a queue so publishers never block."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.subs: set[tuple[str, str]] = set()
        # obdiff: the levels this client was last sent per pair, {side: {price: amount}}.
        self.ob_base: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        self.logged_in = False
        self.stalled = False
        self.queue: asyncio.Queue[tuple[str, Callable[[], None] | None]] = asyncio.Queue(
            maxsize=WS_QUEUE_MAX)

    def send(self, text: str, on_write: Callable[[], None] | None = None) -> None:
        """Queue a frame; ``on_write`` runs just before it is written to the socket."""
        if self.stalled or self.ws.closed:
            return
        try:
            self.queue.put_nowait((text, on_write))
        except asyncio.QueueFull:
            # A consumer that cannot keep up is disconnected, like the real feed does.
            asyncio.get_running_loop().create_task(self.ws.close())

    async def writer(self) -> None:
        while True:
            text, on_write = await self.queue.get()
            if self.stalled:
                continue
            if on_write is not None:
                on_write()
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return


def _frame(msg_type: int, body: dict[str, Any]) -> str:
    return encode([msg_type, body]).decode()


def _levels(book: Book) -> dict[str, dict[Decimal, Decimal]]:
    """The top of the book as published (25 levels a side), by price."""
    return {"asks": {p: a for p, a in book.asks[:BOOK_LEVELS]},
            "bids": {p: a for p, a in book.bids[:BOOK_LEVELS]}}


def _diff(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> list[dict[str, Any]]:
    rows = [{"A": str(a), "P": str(p), "CP": 1 if p not in old else 0}
            for p, a in new.items() if old.get(p) != a]
    rows += [{"A": str(a), "P": str(p), "CP": 3} for p, a in old.items() if p not in new]
    return rows


class WsHub:
    def __init__(
        self,
        market: Market,
        engine: Engine,
        auth: AuthChecker,
        faults: FaultRegistry,
        heartbeat_s: float,
        connect_limiter: WsConnectLimiter | None = None,
    ) -> None:
        self.market = market
        self.connect_limiter = connect_limiter or WsConnectLimiter(enabled=False)
        self.engine = engine
        self.auth = auth
        self.faults = faults
        self.heartbeat_s = heartbeat_s
        self.clients: set[WsClient] = set()
        # (change set, publish time) per symbol: the latency bench's book-publish stamps.
        self.book_events: dict[str, deque[tuple[int, int]]] = {
            s: deque(maxlen=20000) for s in market.books
        }

    async def close_all(self) -> None:
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.ws.close()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        refusal = self.connect_limiter.check(request.remote or "", time.monotonic())
        if refusal is not None:
            resp = web.Response(body=encode(refusal.body()), status=429,
                                content_type="application/json")
            resp.headers["Retry-After"] = str(refusal.retry_after_s)
            return resp
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, autoping=True)
        await ws.prepare(request)
        client = WsClient(ws)
        if self.faults.active("ws_drop"):
            await ws.close()
            return ws
        client.stalled = bool(self.faults.active("ws_stall"))
        self.clients.add(client)
        writer = asyncio.ensure_future(client.writer())
        client.send(_frame(991, WS_VERSION))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._message(client, msg.data)
        finally:
            self.clients.discard(client)
            writer.cancel()
        return ws

    def _message(self, client: WsClient, data: str) -> None:
        try:
            frame = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return
        # Only the array framing is understood; a bare object yields nothing (ISS#399).
        if not (isinstance(frame, list) and len(frame) == 2 and isinstance(frame[1], dict)):
            return
        msg_type, body = frame
        if msg_type == 151:
            self._subscribe(client, body)
        elif msg_type == 114:
            self._login(client, body)

    def _subscribe(self, client: WsClient, body: dict[str, Any]) -> None:
        channel = str(body.get("channel", ""))
        event = str(body.get("event", "")).replace("_", "").upper()
        if channel == "tradeview":  # BTCTRY_60: keep the resolution's underscore
            event = str(body.get("event", "")).upper()
        join = body.get("join", True) is not False
        ok = self._known(channel, event)
        word = "join" if join else "leave"
        key = (channel, "all" if event == "ALL" else event)
        reply = {"type": 100, "id": 0, "ok": ok, "message": f"{word}|{channel}:{key[1]}"}
        client.send(_frame(100, reply))
        if not ok:
            return
        if not join:
            client.subs.discard(key)
            if channel == "obdiff":
                client.ob_base.pop(event, None)
            return
        client.subs.add(key)
        if channel == "orderbook":
            client.send(self._book_frame(self.market.books[event]))
        elif channel == "obdiff":
            book = self.market.books[event]
            client.ob_base[event] = _levels(book)
            client.send(self._book_frame(book))  # one full 431, then 432 diffs
        elif channel == "trade":
            client.send(self._trade_snapshot(self.market.books[event]))

    def _known(self, channel: str, event: str) -> bool:
        if channel in ("orderbook", "obdiff", "trade"):
            return event in self.market.books
        if channel == "ticker":
            return event == "ALL" or event in self.market.books
        if channel == "tradeview":
            pair, _, resolution = event.partition("_")
            return pair in self.market.books and resolution in TRADEVIEW_RESOLUTIONS
        return False

    def _login(self, client: WsClient, body: dict[str, Any]) -> None:
        ok = self.auth.check_ws_login(
            str(body.get("publicKey", "")), str(body.get("nonce", "")), str(body.get("signature"))
        )
        client.logged_in = ok
        reply = {
            "type": 114,
            "id": self.engine.user_id if ok else 0,
            "ok": ok,
            "message": None if ok else "Unauthorized - Invalid Public key",
        }
        client.send(_frame(114, reply))

    def _subscribers(self, key: tuple[str, str]) -> list[WsClient]:
        return [c for c in self.clients if key in c.subs]

    # ------------------------------------------------------------------ order book

    @staticmethod
    def _book_frame(book: Book) -> str:
        s = book.spec.name
        body = {
            "CS": book.change_set,
            "PS": s,
            "AO": [{"A": str(a), "P": str(p)} for p, a in book.asks[:BOOK_LEVELS]],
            "BO": [{"A": str(a), "P": str(p)} for p, a in book.bids[:BOOK_LEVELS]],
            "channel": "orderbook",
            "event": s,
            "type": 431,
        }
        return _frame(431, body)

    def publish_book(self, symbol: str) -> None:
        clients = self._subscribers(("orderbook", symbol))
        if not clients:
            return
        book = self.market.books[symbol]
        frame = self._book_frame(book)
        events, change_set = self.book_events[symbol], book.change_set

        def published() -> None:
            # Stamped as the frame goes onto the socket, not when it was queued: the
            # queue wait (this handler's own reply first) is not the subscriber's delay.
            events.append((change_set, time.monotonic_ns()))

        for client in clients:
            client.send(frame, published)

    def publish_obdiff(self, symbol: str) -> None:
        """432 to each obdiff subscriber: the rows that changed since what it was sent.
        CP 0 = amount updated, 1 = new level, 3 = level deleted (its last amount kept:
        A never becomes 0 on BTCTurk)."""
        clients = self._subscribers(("obdiff", symbol))
        if not clients:
            return
        book = self.market.books[symbol]
        now = _levels(book)
        for client in clients:
            base = client.ob_base.get(symbol, {"asks": {}, "bids": {}})
            rows = {side: _diff(base[side], now[side]) for side in ("asks", "bids")}
            client.ob_base[symbol] = now
            if not rows["asks"] and not rows["bids"]:
                continue
            body = {"CS": book.change_set, "PS": symbol, "AO": rows["asks"], "BO": rows["bids"],
                    "channel": "obdiff", "event": symbol, "type": 432}
            client.send(_frame(432, body))

    # ------------------------------------------------------------------ trades

    @staticmethod
    def _trade_row(symbol: str, t: PublicTrade) -> dict[str, Any]:
        return {
            "D": str(t.timestamp_ms),
            "I": str(t.trade_id),
            "A": str(t.amount),
            "P": str(t.price),
            "PS": symbol,
            "S": t.side,
        }

    def _trade_snapshot(self, book: Book) -> str:
        s = book.spec.name
        items = [self._trade_row(s, t) for t in list(book.trades)[-50:]]
        return _frame(421, {"symbol": s, "items": items, "channel": "trade", "event": s,
                            "type": 421})

    def publish_trade(self, symbol: str, trade: PublicTrade) -> None:
        self.publish_tradeview(symbol, trade)
        clients = self._subscribers(("trade", symbol))
        if not clients:
            return
        body = {**self._trade_row(symbol, trade), "channel": "trade", "event": symbol, "type": 422}
        frame = _frame(422, body)
        for client in clients:
            client.send(frame)

    def publish_tradeview(self, symbol: str, trade: PublicTrade) -> None:
        """428: the candle of each subscribed resolution that this trade updated."""
        book = self.market.books[symbol]
        for resolution, seconds in TRADEVIEW_RESOLUTIONS.items():
            event = f"{symbol}_{resolution}"
            clients = self._subscribers(("tradeview", event))
            if not clients:
                continue
            start = trade.timestamp_ms // 1000 // seconds * seconds
            candles = book.tape.candles(seconds, from_s=start)
            if not candles:
                continue
            c = candles[-1]
            body = {"D": c.start_s, "P": symbol, "R": resolution, "O": str(c.open),
                    "H": str(c.high), "L": str(c.low), "C": str(c.close), "V": str(c.volume),
                    "channel": "tradeview", "event": event, "type": 428}
            frame = _frame(428, body)
            for client in clients:
                client.send(frame)

    # ------------------------------------------------------------------ ticker

    def publish_ticker(self, now_ms: int) -> None:
        rows = []
        for index, book in enumerate(self.market.books.values()):
            row = self._ticker_row(index, book, now_ms)
            rows.append(row)
            symbol = book.spec.name
            clients = self._subscribers(("ticker", symbol))
            if clients:
                frame = _frame(402, {**row, "channel": "ticker", "event": symbol, "type": 402})
                for client in clients:
                    client.send(frame)
        clients = self._subscribers(("ticker", "all"))
        if clients:
            frame = _frame(401, {"items": rows, "channel": "ticker", "event": "all", "type": 401})
            for client in clients:
                client.send(frame)

    @staticmethod
    def _ticker_row(index: int, book: Book, now_ms: int) -> dict[str, Any]:
        r = ticker_row(index, book, now_ms)
        bid_amt = book.bids[0][1] if book.bids else Decimal(0)
        ask_amt = book.asks[0][1] if book.asks else Decimal(0)
        return {
            "PS": r["pair"],
            "B": str(r["bid"]),
            "A": str(r["ask"]),
            "BA": str(bid_amt),
            "AA": str(ask_amt),
            "H": str(r["high"]),
            "L": str(r["low"]),
            "LA": str(r["last"]),
            "O": str(r["open"]),
            "V": str(r["volume"]),
            "AV": str(r["average"]),
            "D": str(r["daily"]),
            "DP": str(r["dailyPercent"]),
            "DS": r["denominatorSymbol"],
            "NS": r["numeratorSymbol"],
            "PId": index + 1,
            "Ord": index + 1,
        }

    # ------------------------------------------------------------------ private (user) events

    def publish_private(self, msg_type: int, body: dict[str, Any]) -> None:
        clients = [c for c in self.clients if c.logged_in]
        if not clients:
            return
        frame = _frame(msg_type, body)
        for client in clients:
            client.send(frame)
