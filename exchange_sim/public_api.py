"""Public REST endpoints (no authentication): server time, exchange info, ticker, book, trades."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .market import Market
from .responses import Handler, encode, encode_numbers, envelope, error, int_param, pair_param
from .views import symbol_json, ticker_row


class PublicApi:
    def __init__(self, market: Market, now_ms: Callable[[], int]) -> None:
        self.market = market
        self.now_ms = now_ms

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/api/v2/server/time"): self.h_time,
            ("GET", "/api/v2/server/ping"): self.h_ping,
            ("GET", "/api/v2/server/exchangeinfo"): self.h_exchange_info,
            ("GET", "/api/v2/ticker"): self.h_ticker,
            ("GET", "/api/v2/orderbook"): self.h_order_book,
            ("GET", "/api/v2/trades"): self.h_trades,
        }

    async def h_time(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        now = self.now_ms()
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1000))
        body = {"serverTime": now, "serverTime2": f"{iso}.{now % 1000:03d}0000+00:00"}
        return web.Response(body=encode(body), content_type="application/json")

    async def h_ping(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return envelope(None)

    async def h_exchange_info(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        books = self.market.books.values()
        symbols = [symbol_json(i, b) for i, b in enumerate(books)]
        assets = sorted({a for b in books for a in (b.spec.numerator, b.spec.denominator)})
        data = {
            "timeZone": "UTC",
            "serverTime": self.now_ms(),
            "symbols": symbols,
            "currencies": [{"id": i, "symbol": a, "precision": 8} for i, a in enumerate(assets)],
            "currencyOperationBlocks": [],
        }
        return envelope(data)

    async def h_ticker(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        pair = pair_param(request)
        rows = [
            ticker_row(i, b)
            for i, b in enumerate(self.market.books.values())
            if pair is None or b.spec.name == pair
        ]
        body = {"success": True, "message": None, "code": 0, "data": rows, "httpStatusCode": 200}
        # Ticker values are JSON numbers on BTCTurk (unlike most other endpoints).
        return web.Response(body=encode_numbers(body), content_type="application/json")

    async def h_order_book(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        book = self.market.books.get(pair_param(request) or "")
        if book is None:
            return error("PAIR_SYMBOL_NECESSARY", 1000)
        limit = int_param(request, "limit", 100, 1000)
        data = {
            "timestamp": book.timestamp_ms,
            "bids": [[str(p), str(a)] for p, a in book.bids[:limit]],
            "asks": [[str(p), str(a)] for p, a in book.asks[:limit]],
        }
        return envelope(data)

    async def h_trades(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        book = self.market.books.get(pair_param(request) or "")
        if book is None:
            return error("PAIR_SYMBOL_NECESSARY", 1000)
        last = int_param(request, "last", 50, 50)
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
