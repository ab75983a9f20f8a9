"""Authenticated REST endpoints: balances, order submit/cancel/query, the user's trades.

Authentication is checked by the dispatcher before any handler here runs; these handlers
translate between BTCTurk's wire shapes and the pure engine.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aiohttp import web

from .engine import Engine, OrderRequest, SimReject, to_decimal
from .order_log import set_outcome
from .responses import Handler, encode, envelope, error, int_param, pair_param, query

THIRTY_DAYS_MS = 30 * 86_400_000


class PrivateApi:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/api/v1/users/balances"): self.h_balances,
            ("POST", "/api/v1/order"): self.h_submit,
            ("DELETE", "/api/v1/order"): self.h_cancel,
            ("GET", "/api/v1/openorders"): self.h_open_orders,
            ("GET", "/api/v1/allorders"): self.h_all_orders,
            ("GET", "/api/v1/users/transactions/trade"): self.h_user_trades,
            ("GET", "/api/v1/order/{id}"): self.h_get_order,
            ("GET", "/api/v1/users/transactions/trade/{id}"): self.h_user_trade_by_id,
            ("GET", "/api/v1/users/transactions/crypto"): self.h_no_transfers,
            ("GET", "/api/v1/users/transactions/fiat"): self.h_no_transfers,
        }


    async def h_balances(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return envelope(self.engine.balances_json())

    async def h_submit(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        try:
            req: OrderRequest = self.engine.parse_request(ctx["fields"])
            order = self.engine.submit(req)
        except SimReject as exc:
            set_outcome(ctx, f"rejected:{exc.message}", None, exc.http_status)
            return error(exc.message, exc.code, exc.http_status)
        set_outcome(ctx, "accepted", order.id, 200)
        return envelope(self.engine.submit_json(order))

    async def h_cancel(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        try:
            order_id = int(query(request).get("id", ""))
        except ValueError:
            return error("NO_ORDER_MATCHES_YOUR_REQUEST", 1052)
        try:
            self.engine.cancel(order_id)
        except SimReject as exc:
            return error(exc.message, exc.code, exc.http_status)
        body = {"success": True, "message": "SUCCESS", "code": 0, "httpStatusCode": 200}
        return web.Response(body=encode(body), content_type="application/json")

    async def h_open_orders(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        pair = pair_param(request)
        orders = self.engine.open_orders_of(pair)
        data = {
            "asks": [self.engine.order_json(o) for o in orders if o.side == "sell"],
            "bids": [self.engine.order_json(o) for o in orders if o.side == "buy"],
        }
        return envelope(data)

    async def h_all_orders(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """Newest first; ``orderId`` keeps orders with id >= it; ``page`` (1-based) pages
        through ``limit``-sized slices."""
        pair = pair_param(request)
        low = query(request)
        start = to_decimal(low.get("starttime"))
        end = to_decimal(low.get("endtime"))
        from_id = to_decimal(low.get("orderid"))
        limit = int_param(request, "limit", 100, 1000)
        page = int_param(request, "page", 1, 1_000_000)
        skip = (page - 1) * limit
        picked = []
        for order in reversed(self.engine.orders.values()):  # newest first
            if pair is not None and order.symbol != pair:
                continue
            if from_id is not None and order.id < from_id:
                continue
            if (start is not None and order.time_ms < start) or (
                end is not None and order.time_ms > end
            ):
                continue
            if skip:
                skip -= 1
                continue
            picked.append(self.engine.order_json(order))
            if len(picked) >= limit:
                break
        return envelope(picked)

    async def h_get_order(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        try:
            order = self.engine.orders.get(int(ctx["path"].rsplit("/", 1)[1]))
        except ValueError:
            order = None
        if order is None:
            return error("Order not found", 1152)
        return envelope(self.engine.order_json(order))

    async def h_user_trades(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """Filters as documented: repeated ``type`` (buy/sell) and ``symbol`` (currency
        codes, either side of the pair), ``pairSymbol``, ``startDate``/``endDate`` (ms;
        without them the last 30 days), ``orderId``."""
        pair = pair_param(request)
        low = query(request)
        start, end = to_decimal(low.get("startdate")), to_decimal(low.get("enddate"))
        if start is None and end is None:
            start = Decimal(self.engine.now_ms() - THIRTY_DAYS_MS)
        order_id = low.get("orderid")
        types = {v.lower() for k, v in request.query.items() if k.lower() == "type"}
        symbols = {v.upper() for k, v in request.query.items() if k.lower() == "symbol"}
        data = [
            self.engine.fill_json(f)
            for f in reversed(self.engine.fills)
            if (pair is None or f.symbol == pair)
            and (start is None or f.timestamp_ms >= start)
            and (end is None or f.timestamp_ms <= end)
            and (order_id is None or str(f.order_id) == order_id)
            and (not types or f.side in types)
            and (not symbols or f.numerator in symbols or f.denominator in symbols)
        ]
        return envelope(data)

    async def h_user_trade_by_id(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """One of the user's trades by its id (a one-element list, like the list endpoint)."""
        wanted = ctx["path"].rsplit("/", 1)[1]
        data = [self.engine.fill_json(f) for f in self.engine.fills if str(f.id) == wanted]
        return envelope(data)

    async def h_no_transfers(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """Crypto and fiat deposits/withdrawals: the paper account has none (its balances
        come from the simulator's options), so the documented list is always empty."""
        return envelope([])
