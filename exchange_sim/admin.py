"""The ``/sim/`` admin API: inspect the account, steer the market, inject faults, reset.

Never authenticated by BTCTurk's API keys and never faulted. It is loopback-only unless the
simulator was started with ``--allow-remote``, in which case a bearer token is required
(checked by the dispatcher, see app.py).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from .engine import SimReject
from .fault_injection import apply_ws_fault, clear_ws_faults
from .faults import WS_KINDS, FaultSpecError
from .options import parse_balances
from .responses import Handler, decode_body, encode, pair_param

if TYPE_CHECKING:
    from .app import Simulator


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    return decode_body(raw) if raw else {}


class AdminApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/sim/received-orders"): self.a_received_orders,
            ("GET", "/sim/state"): self.a_state,
            ("GET", "/sim/faults"): self.a_list_faults,
            ("POST", "/sim/faults"): self.a_add_faults,
            ("DELETE", "/sim/faults"): self.a_clear_faults,
            ("POST", "/sim/book"): self.a_set_book,
            ("POST", "/sim/market"): self.a_market,
            ("GET", "/sim/book-events"): self.a_book_events,
            ("POST", "/sim/reset"): self.a_reset,
            ("POST", "/sim/forget-order"): self.a_forget_order,
        }

    async def a_received_orders(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        return web.json_response(self.sim.order_log.entries)

    async def a_state(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        sim = self.sim
        engine = sim.engine
        acct = engine.account
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
            "open_orders": [engine.order_json(o) for r in engine.open_orders.values() for o in r],
            "orders_total": len(engine.orders),
            "fills": [
                {**engine.fill_json(f), "symbol": f.symbol, "maker": f.maker} for f in engine.fills
            ],
            "random_walk": sim.random_walk,
            "faults": sim.faults.describe(),
            "ws_clients": len(sim.ws.clients),
            "rate_limited": sim.rate_limiter.refused,  # 429s answered so far
            "ws_connects_refused": sim.ws_connects.refused,  # WS upgrades answered 429
        }
        return web.Response(body=encode(body), content_type="application/json")

    async def a_list_faults(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        body = encode(self.sim.faults.describe())
        return web.Response(body=body, content_type="application/json")

    async def a_add_faults(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        sim = self.sim
        try:
            spec = await _json(request)
            specs = spec if isinstance(spec, list) else [spec]
            faults = [sim.faults.add(s) for s in specs]
        except (FaultSpecError, msgspec.DecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        for fault in faults:
            if fault.kind in WS_KINDS:
                apply_ws_fault(fault, sim.faults, sim.ws, sim.spawn)
        return web.json_response({"ids": [f.id for f in faults]})

    async def a_clear_faults(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        self.sim.faults.clear()
        clear_ws_faults(self.sim.ws)
        return web.json_response({"cleared": True})

    async def a_set_book(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        sim = self.sim
        try:
            spec = await _json(request)
            symbol = str(spec["symbol"]).replace("_", "").upper()
            bids = [[Decimal(str(p)), Decimal(str(a))] for p, a in spec.get("bids", [])]
            asks = [[Decimal(str(p)), Decimal(str(a))] for p, a in spec.get("asks", [])]
            if symbol not in sim.market.books:
                raise KeyError(symbol)
        except (KeyError, ValueError, TypeError, ArithmeticError, msgspec.DecodeError) as exc:
            return web.json_response({"error": f"bad book: {exc!r}"}, status=400)
        book = sim.market.set_book(symbol, bids, asks, sim.now_ms())
        fills = sim.engine.match_resting(symbol)
        sim.ws.publish_book(symbol)
        return web.json_response({"symbol": symbol, "change_set": book.change_set, "fills": fills})

    async def a_market(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        spec = await _json(request)
        if isinstance(spec, dict) and "random_walk" in spec:
            self.sim.random_walk = bool(spec["random_walk"])
        return web.json_response({"random_walk": self.sim.random_walk})

    async def a_book_events(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        symbol = pair_param(request, "symbol") or ""
        events = self.sim.ws.book_events.get(symbol, deque())
        return web.json_response([{"change_set": cs, "published_mono_ns": ns} for cs, ns in events])

    async def a_forget_order(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        """Test fault: drop an open order (by ``client_order_id``) as if the exchange
        had lost it: gone from open orders, all orders and order-by-id."""
        spec = await _json(request)
        cid = spec.get("client_order_id") if isinstance(spec, dict) else None
        if not isinstance(cid, str) or not cid:
            return web.json_response({"error": "client_order_id required"}, status=400)
        try:
            order = self.sim.engine.forget(cid)
        except SimReject as exc:
            return web.json_response({"error": str(exc)}, status=404)
        self.sim.persist()
        return web.json_response({"forgotten": order.id})

    async def a_reset(self, request: web.Request, ctx: dict[str, Any]) -> web.Response:
        spec = await _json(request)
        balances = spec.get("balances") if isinstance(spec, dict) else None
        self.sim.reset(parse_balances(balances) if balances else None)
        return web.json_response({"reset": True})
