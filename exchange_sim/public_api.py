"""Public REST endpoints (no authentication): server time, exchange info, ticker, book, trades."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from .history import DAY_S, Candle
from .market import Book, Market
from .responses import (
    Handler,
    encode,
    encode_numbers,
    envelope,
    error,
    int_param,
    pair_param,
    query,
)
from .views import symbol_json, ticker_row

SIM_VERSION = "btcbot-sim-1"
# Chart resolutions BTCTurk documents (minutes, 1D, 1W); a month is not a fixed bucket.
RESOLUTION_S = {
    **{str(m): m * 60 for m in (1, 5, 15, 30, 60, 240)},
    "1D": DAY_S, "D": DAY_S, "1W": 7 * DAY_S, "W": 7 * DAY_S,
}


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
            ("GET", "/api/v1/trades"): self.h_trades,  # documented under v1 too
            ("GET", "/api/v2/ticker/currency"): self.h_ticker_currency,
            ("GET", "/api/v2/server/version"): self.h_version,
            ("GET", "/api/v2/ohlc"): self.h_ohlc,
            # BTCTurk's chart API (graph-api.btcturk.com), served here on the same port.
            ("GET", "/v1/ohlcs"): self.h_graph_ohlcs,
            ("GET", "/v1/klines/history"): self.h_graph_klines,
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
            "currencies": [
                {"id": i + 1, "symbol": a, "precision": self.market.asset_precision(a)}
                for i, a in enumerate(assets)
            ],
            "currencyOperationBlocks": [],
        }
        return envelope(data)

    async def h_ticker(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        pair = pair_param(request)
        now = self.now_ms()
        rows = [
            ticker_row(i, b, now)
            for i, b in enumerate(self.market.books.values())
            if pair is None or b.spec.name == pair
        ]
        body = {"success": True, "message": None, "code": 0, "data": rows, "httpStatusCode": 200}
        # Ticker values are JSON numbers on BTCTurk (unlike most other endpoints).
        return web.Response(body=encode_numbers(body), content_type="application/json")

    async def h_ticker_currency(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """Tickers of the pairs quoted in ``symbol`` (GetByDenominator in the swagger)."""
        symbol = (query(request).get("symbol") or "").upper()
        now = self.now_ms()
        rows = [
            ticker_row(i, b, now)
            for i, b in enumerate(self.market.books.values())
            if not symbol or b.spec.denominator == symbol
        ]
        body = {"success": True, "message": None, "code": 0, "data": rows, "httpStatusCode": 200}
        return web.Response(body=encode_numbers(body), content_type="application/json")

    async def h_version(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return envelope({"version": SIM_VERSION, "name": "btcbot exchange simulator"})

    def _daily(self, book: Book, from_s: int | None = None,
               to_s: int | None = None) -> list[tuple[Candle, Decimal, Decimal]]:
        """Daily candles with the day's change (close - open, in % of open)."""
        out = []
        for c in book.tape.candles(DAY_S, from_s, to_s):
            change = c.close - c.open
            pct = (change / c.open * 100).quantize(Decimal("0.01")) if c.open else Decimal(0)
            out.append((c, change, pct))
        return out

    @staticmethod
    def _average(c: Candle, book: Book) -> Decimal:
        return (c.notional / c.volume).quantize(book.spec.price_quantum) if c.volume else c.close

    async def h_ohlc(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        book = self.market.books.get(pair_param(request) or "")
        if book is None:
            return error("PAIR_SYMBOL_NECESSARY", 1000)
        rows = self._daily(book)
        last = query(request).get("last")
        if last and last.isdigit():
            rows = rows[-int(last):]
        s = book.spec
        data = [
            {
                "pairNormalized": f"{s.numerator}_{s.denominator}",
                "pairSymbol": s.name,
                "time": c.start_s,
                "open": str(c.open),
                "high": str(c.high),
                "low": str(c.low),
                "close": str(c.close),
                "volume": str(c.volume),
                "average": str(self._average(c, book)),
                "dailyChangeAmount": str(change),
                "dailyChangePercentage": str(pct),
            }
            for c, change, pct in rows
        ]
        return envelope(data)

    @staticmethod
    def _seconds(value: str | None) -> int | None:
        return int(value) if value and value.lstrip("-").isdigit() else None

    async def h_graph_ohlcs(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """``/v1/ohlcs?pair=&from=&to=`` (seconds): daily candles, not enveloped."""
        low = query(request)
        book = self.market.books.get((low.get("pair") or "").replace("_", "").upper())
        if book is None:
            return error("PAIR_SYMBOL_NECESSARY", 1000)
        rows = self._daily(book, self._seconds(low.get("from")), self._seconds(low.get("to")))
        data = [
            {
                "pair": book.spec.name,
                "time": c.start_s,
                "open": str(c.open),
                "high": str(c.high),
                "low": str(c.low),
                "close": str(c.close),
                "volume": str(c.volume),
                "total": str(c.notional.quantize(book.spec.price_quantum)),
                "average": str(self._average(c, book)),
                "dailyChangeAmount": str(change),
                "dailyChangePercentage": str(pct),
            }
            for c, change, pct in rows
        ]
        return web.Response(body=encode(data), content_type="application/json")

    async def h_graph_klines(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """``/v1/klines/history?symbol=&resolution=&from=&to=``: TradingView UDF arrays."""
        low = query(request)
        book = self.market.books.get((low.get("symbol") or "").replace("_", "").upper())
        resolution = RESOLUTION_S.get((low.get("resolution") or "").upper())
        if book is None or resolution is None:
            body = {"s": "error", "errmsg": "unknown symbol or resolution"}
            return web.Response(body=encode(body), status=400, content_type="application/json")
        candles = book.tape.candles(
            resolution, self._seconds(low.get("from")), self._seconds(low.get("to"))
        )
        if not candles:
            return web.Response(body=encode({"s": "no_data"}), content_type="application/json")
        body = {
            "s": "ok",
            "t": [c.start_s for c in candles],
            "o": [c.open for c in candles],
            "h": [c.high for c in candles],
            "l": [c.low for c in candles],
            "c": [c.close for c in candles],
            "v": [c.volume for c in candles],
        }
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
