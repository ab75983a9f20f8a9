"""Applying injected faults (see faults.py for the registry) to HTTP requests and WS links.

A request's faults are drawn once; the "pre" kinds answer before the request reaches its
handler (nothing happens on the exchange), the "post" kinds let it be processed (the order
exists) and then break or withhold the answer — the ambiguous outcomes exactly-once must
survive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .faults import Fault, FaultRegistry
from .order_log import mark_outcome, set_outcome
from .responses import encode, error
from .ws import WsHub


async def pre_faults(fired: list[Fault], ctx: dict[str, Any]) -> web.Response | None:
    for fault in fired:
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_ms / 1000)
    for fault in fired:
        if fault.kind == "http_500":
            set_outcome(ctx, "fault:http_500", None, fault.status)
            return error("INTERNAL_ERROR", 500, fault.status if fault.status >= 500 else 500)
        if fault.kind == "http_429":
            set_outcome(ctx, "fault:http_429", None, 429)
            body = {
                "message": "TOO_MANY_REQUESTS",
                "success": False,
                "code": 429,
                "details": "Quota exceeded (simulated).",
                "policy": "ip",
            }
            resp = web.Response(body=encode(body), status=429, content_type="application/json")
            resp.headers["Retry-After"] = f"{fault.retry_after:g}"
            return resp
    return None


async def post_faults(
    fired: list[Fault],
    request: web.Request,
    response: web.StreamResponse,
    ctx: dict[str, Any],
) -> web.StreamResponse:
    for fault in fired:
        if fault.kind == "garbage":
            mark_outcome(ctx, "garbage")
            return web.Response(status=200, text=fault.body, content_type="application/json")
        if fault.kind == "accept_then_drop":
            mark_outcome(ctx, "dropped")
            if fault.mode != "close":
                await asyncio.sleep(fault.hold_s)
            if request.transport is not None:
                request.transport.close()
            # The transport is gone; aiohttp discards whatever we return now.
            return web.Response(status=200)
    return response


def apply_ws_fault(
    fault: Fault,
    registry: FaultRegistry,
    hub: WsHub,
    spawn: Callable[[Awaitable[Any]], Any],
) -> None:
    for client in list(hub.clients):
        if fault.kind == "ws_stall":
            client.stalled = True
        else:
            spawn(client.ws.close())
    if fault.expires_mono is None:
        # Without duration_s a WS fault is a one-shot action on current connections.
        registry.faults.remove(fault)


def clear_ws_faults(hub: WsHub) -> None:
    for client in hub.clients:
        client.stalled = False
