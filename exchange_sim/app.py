"""The simulator's HTTP + WebSocket server (aiohttp).

One catch-all handler dispatches on (method, lower-cased path), which gives BTCTurk's
case-insensitive routes (``/api/v2/orderbook`` and ``/api/v2/orderBook``) for free and lets
fault injection wrap every request uniformly. Admin endpoints live under ``/sim/`` and
are never authenticated nor faulted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from .auth_check import AuthChecker, AuthFailure
from .engine import Engine, OrderRequest, SimReject, to_decimal
from .faults import WS_KINDS, Fault, FaultRegistry, FaultSpecError
from .market import Book, Market, PublicTrade

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_API_SECRET = "YnRjYm90LWV4Y2hhbmdlLXNpbS1zZWNyZXQtdjEhIQ=="
DEFAULT_BALANCES = {
    "TRY": Decimal("100000"),
    "BTC": Decimal("0.5"),
    "ETH": Decimal("5"),
    "SOL": Decimal("50"),
    "USDT": Decimal("1000"),
}
WS_VERSION = {"type": 991, "current": "6.0.0", "min": "2.3.0"}
WS_QUEUE_MAX = 20000

_encode = msgspec.json.Encoder().encode
_encode_numbers = msgspec.json.Encoder(decimal_format="number").encode
_decode_body = msgspec.json.Decoder(float_hook=Decimal).decode

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def parse_balances(text: str | dict[str, Any] | None) -> dict[str, Decimal]:
    """``"TRY=100000,BTC=0.5"`` or a mapping -> {asset: Decimal}."""
    if text is None:
        return dict(DEFAULT_BALANCES)
    items = (
        text.items()
        if isinstance(text, dict)
        else (part.split("=", 1) for part in text.split(",") if part.strip())
    )
    return {str(k).strip().upper(): Decimal(str(v).strip()) for k, v in items}


@dataclass
class SimOptions:
    seed: int = 1
    credentials: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_API_KEY: DEFAULT_API_SECRET}
    )
    book_interval_ms: int = 250
    balances: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    random_walk: bool = True
    nonce_window_ms: int = 1000
    clock_offset_ms: int = 0
    taker_fee: Decimal = Decimal("0.001")
    maker_fee: Decimal = Decimal("0.0005")
    ws_heartbeat_s: float = 20.0

    @classmethod
    def from_kwargs(cls, **kw: Any) -> SimOptions:
        key, secret = kw.pop("api_key", None), kw.pop("api_secret", None)
        if key or secret:
            creds = dict(kw.pop("credentials", None) or {})
            creds[key or DEFAULT_API_KEY] = secret or DEFAULT_API_SECRET
            kw["credentials"] = creds
        if "balances" in kw:
            kw["balances"] = parse_balances(kw["balances"])
        return cls(**kw)


def envelope(data: Any, status: int = 200, message: str = "SUCCESS") -> web.Response:
    body = {"success": True, "message": message, "code": 0, "data": data, "httpStatusCode": status}
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def error(message: str, code: int, status: int = 400, success: bool = False) -> web.Response:
    body = {
        "success": success,
        "message": message,
        "code": code,
        "data": None,
        "httpStatusCode": status,
    }
    return web.Response(body=_encode(body), status=status, content_type="application/json")


class WsClient:
    """One WS connection; a writer task drains a queue so publishers never block."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.subs: set[tuple[str, str]] = set()
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


class Simulator:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.market = Market(seed=options.seed)
        self.engine = Engine(
            self.market,
            options.balances,
            now_ms=self.now_ms,
            taker_fee=options.taker_fee,
            maker_fee=options.maker_fee,
        )
        self.engine.emit_private = self._publish_private
        self.engine.emit_trade = self._publish_trade
        self.faults = FaultRegistry(options.seed)
        self.auth = AuthChecker(options.credentials, options.nonce_window_ms)
        self.random_walk = options.random_walk
        self.ws_clients: set[WsClient] = set()
        self.received_orders: list[dict[str, Any]] = []
        self.book_events: dict[str, deque[tuple[int, int]]] = {
            s: deque(maxlen=20000) for s in self.market.books
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        now = self.now_ms()
        for book in self.market.books.values():
            self.market.regenerate(book, now)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/api/v2/server/time"): self.h_time,
            ("GET", "/api/v2/server/ping"): self.h_ping,
            ("GET", "/api/v2/server/exchangeinfo"): self.h_exchange_info,
            ("GET", "/api/v2/ticker"): self.h_ticker,
            ("GET", "/api/v2/orderbook"): self.h_order_book,
            ("GET", "/api/v2/trades"): self.h_trades,
            ("GET", "/api/v1/users/balances"): self.h_balances,
            ("POST", "/api/v1/order"): self.h_submit,
            ("DELETE", "/api/v1/order"): self.h_cancel,
            ("GET", "/api/v1/openorders"): self.h_open_orders,
            ("GET", "/api/v1/allorders"): self.h_all_orders,
            ("GET", "/api/v1/users/transactions/trade"): self.h_user_trades,
        }
        self.admin_routes: dict[tuple[str, str], Handler] = {
            ("GET", "/sim/received-orders"): self.a_received_orders,
            ("GET", "/sim/state"): self.a_state,
            ("GET", "/sim/faults"): self.a_list_faults,
            ("POST", "/sim/faults"): self.a_add_faults,
            ("DELETE", "/sim/faults"): self.a_clear_faults,
            ("POST", "/sim/book"): self.a_set_book,
            ("POST", "/sim/market"): self.a_market,
            ("GET", "/sim/book-events"): self.a_book_events,
            ("POST", "/sim/reset"): self.a_reset,
        }

    # ------------------------------------------------------------------ plumbing

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.options.clock_offset_ms

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def start(self) -> None:
        self._spawn(self._market_loop())

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for client in list(self.ws_clients):
            with contextlib.suppress(Exception):
                await client.ws.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic_ns()
        path = request.path.lower().rstrip("/") or "/"
        if path in ("/", "/ws"):
            return await self.ws_handler(request)
        if path.startswith("/sim/"):
            admin = self.admin_routes.get((request.method, path))
            return await admin(request, {}) if admin else error("NOT_FOUND", 404, 404)
        return await self._api(request, path, received)

    async def _api(self, request: web.Request, path: str, received: int) -> web.StreamResponse:
        ctx: dict[str, Any] = {"path": path}
        if request.method == "POST" and path == "/api/v1/order":
            ctx["fields"] = await self._order_fields(request)
            ctx["log"] = self._log_order(ctx["fields"], received)
        fired = self.faults.http_faults(request.method, path)
        early = await self._pre_faults(fired, ctx)
        if early is not None:
            return early
        if path.startswith("/api/v1/"):
            try:
                self.auth.check(request.headers, self.now_ms())
            except AuthFailure as exc:
                self._set_outcome(ctx, "unauthorized", None, 401)
                return error(exc.message, exc.code, 401, success=True)
        handler = self._route(request.method, path, ctx)
        if handler is None:
            return error("NOT_FOUND", 404, 404)
        response = await handler(request, ctx)
        return await self._post_faults(fired, request, response, ctx)

    def _route(self, method: str, path: str, ctx: dict[str, Any]) -> Handler | None:
        handler = self.routes.get((method, path))
        if handler is None and method == "GET" and path.startswith("/api/v1/order/"):
            ctx["order_id"] = path.rsplit("/", 1)[1]
            handler = self.h_get_order
        return handler

    async def _pre_faults(self, fired: list[Fault], ctx: dict[str, Any]) -> web.Response | None:
        for fault in fired:
            if fault.kind == "latency":
                await asyncio.sleep(fault.latency_ms / 1000)
        for fault in fired:
            if fault.kind == "http_500":
                self._set_outcome(ctx, "fault:http_500", None, fault.status)
                return error("INTERNAL_ERROR", 500, fault.status if fault.status >= 500 else 500)
            if fault.kind == "http_429":
                self._set_outcome(ctx, "fault:http_429", None, 429)
                resp = web.Response(
                    body=_encode(
                        {
                            "message": "TOO_MANY_REQUESTS",
                            "success": False,
                            "code": 429,
                            "details": "Quota exceeded (simulated).",
                            "policy": "ip",
                        }
                    ),
                    status=429,
                    content_type="application/json",
                )
                resp.headers["Retry-After"] = f"{fault.retry_after:g}"
                return resp
        return None

    async def _post_faults(
        self,
        fired: list[Fault],
        request: web.Request,
        response: web.StreamResponse,
        ctx: dict[str, Any],
    ) -> web.StreamResponse:
        for fault in fired:
            if fault.kind == "garbage":
                self._mark_outcome(ctx, "garbage")
                return web.Response(status=200, text=fault.body, content_type="application/json")
            if fault.kind == "accept_then_drop":
                self._mark_outcome(ctx, "dropped")
                if fault.mode != "close":
                    await asyncio.sleep(fault.hold_s)
                if request.transport is not None:
                    request.transport.close()
                # The transport is gone; aiohttp discards whatever we return now.
                return web.Response(status=200)
        return response

    # ------------------------------------------------------------------ order log

    async def _order_fields(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        fields: dict[str, Any] = {}
        if raw:
            try:
                decoded = _decode_body(raw)
            except msgspec.DecodeError:
                decoded = None
            if isinstance(decoded, dict):
                fields.update(decoded)
        # Query string wins over the body, as on BTCTurk.
        fields.update(request.query)
        return fields

    def _log_order(self, fields: dict[str, Any], received: int) -> dict[str, Any]:
        low = {k.lower(): v for k, v in fields.items()}

        def text(key: str) -> str | None:
            value = low.get(key)
            return None if value is None else str(value)

        entry = {
            "seq": len(self.received_orders) + 1,
            "newOrderClientId": text("neworderclientid"),
            "pairSymbol": text("pairsymbol"),
            "orderType": text("ordertype"),
            "orderMethod": text("ordermethod"),
            "price": text("price"),
            "quantity": text("quantity"),
            "received_mono_ns": received,
            "order_id": None,
            "outcome": "pending",
            "http_status": None,
        }
        self.received_orders.append(entry)
        return entry

    @staticmethod
    def _set_outcome(ctx: dict[str, Any], outcome: str, order_id: int | None, status: int) -> None:
        entry = ctx.get("log")
        if entry is not None:
            entry.update(outcome=outcome, order_id=order_id, http_status=status)

    @staticmethod
    def _mark_outcome(ctx: dict[str, Any], suffix: str) -> None:
        entry = ctx.get("log")
        if entry is not None:
            entry["outcome"] = f"{entry['outcome']}_{suffix}"
            entry["http_status"] = None

    # ------------------------------------------------------------------ public REST

    async def h_time(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        now = self.now_ms()
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1000))
        body = {"serverTime": now, "serverTime2": f"{iso}.{now % 1000:03d}0000+00:00"}
        return web.Response(body=_encode(body), content_type="application/json")

    async def h_ping(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return envelope(None)

    async def h_exchange_info(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        symbols = [self._symbol_json(i, b) for i, b in enumerate(self.market.books.values())]
        assets = sorted(
            {a for b in self.market.books.values() for a in (b.spec.numerator, b.spec.denominator)}
        )
        data = {
            "timeZone": "UTC",
            "serverTime": self.now_ms(),
            "symbols": symbols,
            "currencies": [{"id": i, "symbol": a, "precision": 8} for i, a in enumerate(assets)],
            "currencyOperationBlocks": [],
        }
        return envelope(data)

    @staticmethod
    def _symbol_json(index: int, book: Book) -> dict[str, Any]:
        s = book.spec
        return {
            "id": index + 1,
            "name": s.name,
            "nameNormalized": f"{s.numerator}_{s.denominator}",
            "status": "TRADING",
            "numerator": s.numerator,
            "denominator": s.denominator,
            "numeratorScale": s.numerator_scale,
            "denominatorScale": s.denominator_scale,
            "hasFraction": s.has_fraction,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": str(s.min_price),
                    "maxPrice": str(s.max_price),
                    "tickSize": str(s.tick_size),
                    "minExchangeValue": str(s.min_total),
                    "minAmount": None,
                    "maxAmount": None,
                }
            ],
            "orderMethods": ["MARKET", "LIMIT"],
            "displayFormat": "#,###",
            "commissionFromNumerator": False,
            "order": index + 1,
            "priceRounding": False,
            "isNew": False,
            "marketPriceWarningThresholdPercentage": "0.25",
            "maximumOrderAmount": None,
            "maximumLimitOrderPrice": str(s.max_price),
            "minimumLimitOrderPrice": str(s.min_price),
        }

    def _pair(self, request: web.Request, key: str = "pairSymbol") -> str | None:
        low = {k.lower(): v for k, v in request.query.items()}
        value = low.get(key.lower())
        return value.replace("_", "").upper() if value else None

    def _ticker_row(self, index: int, book: Book) -> dict[str, Any]:
        s = book.spec
        last = book.last_price()
        daily = last - book.open_price
        pct = (daily / book.open_price * 100).quantize(Decimal("0.01")) if book.open_price else 0
        return {
            "pair": s.name,
            "pairNormalized": f"{s.numerator}_{s.denominator}",
            "timestamp": book.timestamp_ms,
            "last": last,
            "high": book.high,
            "low": book.low,
            "bid": book.best_bid() or Decimal(0),
            "ask": book.best_ask() or Decimal(0),
            "open": book.open_price,
            "volume": book.volume,
            "average": book.mid.quantize(s.price_quantum),
            "daily": daily,
            "dailyPercent": pct,
            "denominatorSymbol": s.denominator,
            "numeratorSymbol": s.numerator,
            "order": index + 1,
        }

    async def h_ticker(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        pair = self._pair(request)
        rows = [
            self._ticker_row(i, b)
            for i, b in enumerate(self.market.books.values())
            if pair is None or b.spec.name == pair
        ]
        body = {"success": True, "message": None, "code": 0, "data": rows, "httpStatusCode": 200}
        # Ticker values are JSON numbers on BTCTurk (unlike most other endpoints).
        return web.Response(body=_encode_numbers(body), content_type="application/json")

    async def h_order_book(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        book = self.market.books.get(self._pair(request) or "")
        if book is None:
            return error("PAIR_SYMBOL_NECESSARY", 1000)
        limit = self._int_query(request, "limit", 100, 1000)
        data = {
            "timestamp": book.timestamp_ms,
            "bids": [[str(p), str(a)] for p, a in book.bids[:limit]],
            "asks": [[str(p), str(a)] for p, a in book.asks[:limit]],
        }
        return envelope(data)

    @staticmethod
    def _int_query(request: web.Request, key: str, default: int, cap: int) -> int:
        low = {k.lower(): v for k, v in request.query.items()}
        try:
            return max(1, min(cap, int(low.get(key.lower(), default))))
        except ValueError:
            return default

    async def h_trades(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        book = self.market.books.get(self._pair(request) or "")
        if book is None:
            return error("PAIR_SYMBOL_NECESSARY", 1000)
        last = self._int_query(request, "last", 50, 50)
        s = book.spec
        data = [
            {
                "pair": s.name,
                "pairNormalized": f"{s.numerator}_{s.denominator}",
                "numerator": s.numerator,
                "denominator": s.denominator,
                "date": t.timestamp_ms,
                "tid": str(t.trade_id),
                "price": str(t.price),
                "amount": str(t.amount),
                "side": "buy" if t.side == 0 else "sell",
            }
            for t in reversed(list(book.trades)[-last:])
        ]
        return envelope(data)

    # ------------------------------------------------------------------ private REST

    async def h_balances(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return envelope(self.engine.balances_json())

    async def h_submit(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        try:
            req: OrderRequest = self.engine.parse_request(ctx["fields"])
            order = self.engine.submit(req)
        except SimReject as exc:
            self._set_outcome(ctx, f"rejected:{exc.message}", None, exc.http_status)
            return error(exc.message, exc.code, exc.http_status)
        self._set_outcome(ctx, "accepted", order.id, 200)
        return envelope(self.engine.submit_json(order))

    async def h_cancel(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        low = {k.lower(): v for k, v in request.query.items()}
        try:
            order_id = int(low.get("id", ""))
        except ValueError:
            return error("NO_ORDER_MATCHES_YOUR_REQUEST", 1052)
        try:
            self.engine.cancel(order_id)
        except SimReject as exc:
            return error(exc.message, exc.code, exc.http_status)
        body = {"success": True, "message": "SUCCESS", "code": 0, "httpStatusCode": 200}
        return web.Response(body=_encode(body), content_type="application/json")

    async def h_open_orders(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        pair = self._pair(request)
        orders = [
            o
            for sym, resting in self.engine.open_orders.items()
            if pair is None or sym == pair
            for o in resting
        ]
        data = {
            "asks": [self.engine.order_json(o) for o in orders if o.side == "sell"],
            "bids": [self.engine.order_json(o) for o in orders if o.side == "buy"],
        }
        return envelope(data)

    async def h_all_orders(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        pair = self._pair(request)
        low = {k.lower(): v for k, v in request.query.items()}
        start = to_decimal(low.get("starttime"))
        end = to_decimal(low.get("endtime"))
        limit = self._int_query(request, "limit", 100, 1000)
        picked = []
        for order in reversed(self.engine.orders.values()):  # newest first
            if pair is not None and order.symbol != pair:
                continue
            if (start is not None and order.time_ms < start) or (
                end is not None and order.time_ms > end
            ):
                continue
            picked.append(self.engine.order_json(order))
            if len(picked) >= limit:
                break
        return envelope(picked)

    async def h_get_order(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        try:
            order = self.engine.orders.get(int(ctx["order_id"]))
        except ValueError:
            order = None
        if order is None:
            return error("Order not found", 1152)
        return envelope(self.engine.order_json(order))

    async def h_user_trades(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        pair = self._pair(request)
        low = {k.lower(): v for k, v in request.query.items()}
        start, end = to_decimal(low.get("startdate")), to_decimal(low.get("enddate"))
        order_id = low.get("orderid")
        data = [
            self.engine.fill_json(f)
            for f in reversed(self.engine.fills)
            if (pair is None or f.symbol == pair)
            and (start is None or f.timestamp_ms >= start)
            and (end is None or f.timestamp_ms <= end)
            and (order_id is None or str(f.order_id) == order_id)
        ]
        return envelope(data)

    # ------------------------------------------------------------------ admin

    async def _admin_json(self, request: web.Request) -> Any:
        raw = await request.read()
        return _decode_body(raw) if raw else {}

    async def a_received_orders(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return web.json_response(self.received_orders)

    async def a_state(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        acct = self.engine.account
        balances = {
            a: {
                "free": str(acct.free.get(a, Decimal(0))),
                "locked": str(acct.locked.get(a, Decimal(0))),
                "balance": str(acct.free.get(a, Decimal(0)) + acct.locked.get(a, Decimal(0))),
            }
            for a in sorted(set(acct.free) | set(acct.locked))
        }
        body = {
            "balances": balances,
            "open_orders": [
                self.engine.order_json(o) for r in self.engine.open_orders.values() for o in r
            ],
            "orders_total": len(self.engine.orders),
            "fills": [
                {**self.engine.fill_json(f), "symbol": f.symbol, "maker": f.maker}
                for f in self.engine.fills
            ],
            "random_walk": self.random_walk,
            "faults": self.faults.describe(),
            "ws_clients": len(self.ws_clients),
        }
        return web.Response(body=_encode(body), content_type="application/json")

    async def a_list_faults(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return web.Response(body=_encode(self.faults.describe()), content_type="application/json")

    async def a_add_faults(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        try:
            spec = await self._admin_json(request)
            specs = spec if isinstance(spec, list) else [spec]
            faults = [self.faults.add(s) for s in specs]
        except (FaultSpecError, msgspec.DecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        for fault in faults:
            if fault.kind in WS_KINDS:
                self._apply_ws_fault(fault)
        return web.json_response({"ids": [f.id for f in faults]})

    def _apply_ws_fault(self, fault: Fault) -> None:
        for client in list(self.ws_clients):
            if fault.kind == "ws_stall":
                client.stalled = True
            else:
                self._spawn(client.ws.close())
        if fault.expires_mono is None:
            # Without duration_s a WS fault is a one-shot action on current connections.
            self.faults.faults.remove(fault)

    async def a_clear_faults(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        self.faults.clear()
        for client in self.ws_clients:
            client.stalled = False
        return web.json_response({"cleared": True})

    async def a_set_book(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        try:
            spec = await self._admin_json(request)
            symbol = str(spec["symbol"]).replace("_", "").upper()
            bids = [[Decimal(str(p)), Decimal(str(a))] for p, a in spec.get("bids", [])]
            asks = [[Decimal(str(p)), Decimal(str(a))] for p, a in spec.get("asks", [])]
            if symbol not in self.market.books:
                raise KeyError(symbol)
        except (KeyError, ValueError, TypeError, ArithmeticError, msgspec.DecodeError) as exc:
            return web.json_response({"error": f"bad book: {exc!r}"}, status=400)
        book = self.market.set_book(symbol, bids, asks, self.now_ms())
        fills = self.engine.match_resting(symbol)
        self._publish_book(symbol)
        return web.json_response({"symbol": symbol, "change_set": book.change_set, "fills": fills})

    async def a_market(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        spec = await self._admin_json(request)
        if isinstance(spec, dict) and "random_walk" in spec:
            self.random_walk = bool(spec["random_walk"])
        return web.json_response({"random_walk": self.random_walk})

    async def a_book_events(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        symbol = self._pair(request, "symbol") or ""
        events = self.book_events.get(symbol, deque())
        return web.json_response([{"change_set": cs, "published_mono_ns": ns} for cs, ns in events])

    async def a_reset(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        spec = await self._admin_json(request)
        balances = spec.get("balances") if isinstance(spec, dict) else None
        self.engine.reset(parse_balances(balances) if balances else None)
        self.received_orders.clear()
        self.faults.clear()
        self.auth.reset()
        for client in self.ws_clients:
            client.stalled = False
        # Fresh books around the current mids, walk back to its configured default.
        self.random_walk = self.options.random_walk
        now = self.now_ms()
        for book in self.market.books.values():
            self.market.regenerate(book, now)
        return web.json_response({"reset": True})

    # ------------------------------------------------------------------ WebSocket

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=self.options.ws_heartbeat_s, autoping=True)
        await ws.prepare(request)
        client = WsClient(ws)
        if self.faults.active("ws_drop"):
            await ws.close()
            return ws
        client.stalled = bool(self.faults.active("ws_stall"))
        self.ws_clients.add(client)
        writer = asyncio.ensure_future(client.writer())
        client.send(_encode([991, WS_VERSION]).decode())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._ws_message(client, msg.data)
        finally:
            self.ws_clients.discard(client)
            writer.cancel()
        return ws

    def _ws_message(self, client: WsClient, data: str) -> None:
        try:
            frame = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return
        # Only the array framing is understood; a bare object yields nothing (ISS#399).
        if not (isinstance(frame, list) and len(frame) == 2 and isinstance(frame[1], dict)):
            return
        msg_type, body = frame
        if msg_type == 151:
            self._ws_subscribe(client, body)
        elif msg_type == 114:
            self._ws_login(client, body)

    def _ws_subscribe(self, client: WsClient, body: dict[str, Any]) -> None:
        channel = str(body.get("channel", ""))
        event = str(body.get("event", "")).replace("_", "").upper()
        join = body.get("join", True) is not False
        known = event in self.market.books or (channel == "ticker" and event == "ALL")
        ok = channel in ("orderbook", "ticker", "trade") and known
        word = "join" if join else "leave"
        key = (channel, "all" if event == "ALL" else event)
        reply = {"type": 100, "id": 0, "ok": ok, "message": f"{word}|{channel}:{key[1]}"}
        client.send(_encode([100, reply]).decode())
        if not ok:
            return
        if not join:
            client.subs.discard(key)
            return
        client.subs.add(key)
        if channel == "orderbook":
            client.send(self._book_frame(self.market.books[event]))
        elif channel == "trade":
            client.send(self._trade_snapshot(self.market.books[event]))

    def _ws_login(self, client: WsClient, body: dict[str, Any]) -> None:
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
        client.send(_encode([114, reply]).decode())

    def _subscribers(self, key: tuple[str, str]) -> list[WsClient]:
        return [c for c in self.ws_clients if key in c.subs]

    @staticmethod
    def _book_frame(book: Book) -> str:
        s = book.spec.name
        body = {
            "CS": book.change_set,
            "PS": s,
            "AO": [{"A": str(a), "P": str(p)} for p, a in book.asks[:25]],
            "BO": [{"A": str(a), "P": str(p)} for p, a in book.bids[:25]],
            "channel": "orderbook",
            "event": s,
            "type": 431,
        }
        return _encode([431, body]).decode()

    def _publish_book(self, symbol: str) -> None:
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
        body = {"symbol": s, "items": items, "channel": "trade", "event": s, "type": 421}
        return _encode([421, body]).decode()

    def _publish_trade(self, symbol: str, trade: PublicTrade) -> None:
        clients = self._subscribers(("trade", symbol))
        if not clients:
            return
        body = {**self._trade_row(symbol, trade), "channel": "trade", "event": symbol, "type": 422}
        frame = _encode([422, body]).decode()
        for client in clients:
            client.send(frame)

    def _publish_ticker(self) -> None:
        rows = []
        for index, book in enumerate(self.market.books.values()):
            row = self._ws_ticker_row(index, book)
            rows.append(row)
            symbol = book.spec.name
            clients = self._subscribers(("ticker", symbol))
            if clients:
                body = {**row, "channel": "ticker", "event": symbol, "type": 402}
                frame = _encode([402, body]).decode()
                for client in clients:
                    client.send(frame)
        clients = self._subscribers(("ticker", "all"))
        if clients:
            frame = _encode(
                [401, {"items": rows, "channel": "ticker", "event": "all", "type": 401}]
            ).decode()
            for client in clients:
                client.send(frame)

    def _ws_ticker_row(self, index: int, book: Book) -> dict[str, Any]:
        r = self._ticker_row(index, book)
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

    def _publish_private(self, msg_type: int, body: dict[str, Any]) -> None:
        clients = [c for c in self.ws_clients if c.logged_in]
        if not clients:
            return
        frame = _encode([msg_type, body]).decode()
        for client in clients:
            client.send(frame)

    async def _market_loop(self) -> None:
        interval = self.options.book_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self.market_tick()

    def market_tick(self) -> None:
        """One book interval: walk, fill crossed resting orders, publish."""
        now = self.now_ms()
        for symbol, book in self.market.books.items():
            if self.faults.frozen(symbol):
                continue
            if self.random_walk:
                trade = self.market.walk(book, now)
                if trade is not None:
                    self._publish_trade(symbol, trade)
            self.engine.match_resting(symbol)
            self._publish_book(symbol)
        self._publish_ticker()


@dataclass
class SimHandle:
    sim: Simulator
    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    async def close(self) -> None:
        await self.sim.stop()
        await self.runner.cleanup()


async def start_simulator(host: str = "127.0.0.1", port: int = 0, **options: Any) -> SimHandle:
    """Start in this event loop. ``port=0`` picks a free port (see ``handle.port``)."""
    sim = Simulator(SimOptions.from_kwargs(**options))
    runner = web.AppRunner(
        sim.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    sim.start()
    return SimHandle(sim=sim, runner=runner, host=host, port=sock.getsockname()[1])
