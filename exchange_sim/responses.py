"""BTCTurk's response envelopes and the query-string conventions every API area shares.

BTCTurk binds parameters case-insensitively (ASP.NET), so queries are read through
:func:`query` (lower-cased keys).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import web

encode = msgspec.json.Encoder().encode
encode_numbers = msgspec.json.Encoder(decimal_format="number").encode
decode_body = msgspec.json.Decoder(float_hook=Decimal).decode

# Every handler gets the request and a per-request context (path, parsed fields, log entry).
Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def envelope(data: Any, status: int = 200, message: str = "SUCCESS") -> web.Response:
    body = {"success": True, "message": message, "code": 0, "data": data, "httpStatusCode": status}
    return web.Response(body=encode(body), status=status, content_type="application/json")


def error(message: str, code: int, status: int = 400, success: bool = False) -> web.Response:
    body = {
        "success": success,
        "message": message,
        "code": code,
        "data": None,
        "httpStatusCode": status,
    }
    return web.Response(body=encode(body), status=status, content_type="application/json")


def query(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.query.items()}


def pair_param(request: web.Request, key: str = "pairSymbol") -> str | None:
    value = query(request).get(key.lower())
    return value.replace("_", "").upper() if value else None


def int_param(request: web.Request, key: str, default: int, cap: int) -> int:
    try:
        return max(1, min(cap, int(query(request).get(key.lower(), default))))
    except ValueError:
        return default
