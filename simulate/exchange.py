"""The venue in process: the simulator's own API handlers and matching engine behind an
``HttpTransport``, so the executor's and marketdata's *real* BtcTurkClient (its error
taxonomy, decoding, retries, rate windows) talk to it with no socket.

Requests go to ``exchange_sim``'s PublicApi/PrivateApi handlers exactly as its aiohttp
dispatcher would route them (a minimal request object carries the query); answers come
back as the handlers' bytes and status. What the network and the exchange can do wrong
is drawn here from the world's random source (``ExchangeFaults``):

- before the exchange sees a request: connection refused (``ConnectError``: provably not
  sent), a timeout with no answer (``ExchangeTimeout``), 5xx, 429 with Retry-After;
- after the exchange executed it: the answer is lost (accept-then-drop:
  ``ExchangeTimeout``), the case exactly-once exists for;
- an outage (every request refused or 503) for a window;
- the user's trades listed late (a lag) or a row repeated.

The market moves on a timer (``tick``): the seeded walk, resting orders matched, unless a
symbol's book is frozen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import msgspec
from multidict import MultiDict

from exchange_sim.catalog import template_pattern
from exchange_sim.engine import Engine
from exchange_sim.market import DEFAULT_SYMBOLS, Market
from exchange_sim.private_api import PrivateApi
from exchange_sim.public_api import PublicApi
from exchange_sim.responses import decode_body, encode
from shared.btcturk.http import ConnectError, ExchangeTimeout, HttpResponse
from simulate.trace import Trace

HTTP_LATENCY = (0.002, 0.030)  # one way, seconds: a nearby exchange


class ExchangeFaults:
    """Per-request probabilities (set by the world from the profile) and fault windows."""

    connect_refused = 0.0
    timeout = 0.0  # no answer, not executed
    server_error = 0.0  # 503 before executing
    rate_limited = 0.0  # 429
    drop_after_accept = 0.0  # executed, answer lost (writes only)
    repeat_trade = 0.0  # a user-trades answer repeats one row

    def __init__(self) -> None:
        self.outage_until = 0.0  # every call refused/503 until then
        self.frozen_until: dict[str, float] = {}  # symbol -> its book does not move
        self.trades_lag_until = 0.0  # user trades listed late until then
        self.trades_lag_s = 0.0


class _Request:
    """What the handlers read of an aiohttp request: the method, path and query."""

    def __init__(self, method: str, path: str, query: MultiDict[str]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.remote = "127.0.0.1"
        self.headers: dict[str, str] = {}


class InProcessExchange:
    """One simulated exchange; ``transport()`` gives each client its own HttpTransport."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: Any, trace: Trace, *,
                 symbols: list[str], balances: dict[str, Decimal], wall_ms: Callable[[], int],
                 market_seed: int) -> None:
        self.loop = loop
        self.rng = rng
        self.trace = trace
        self.faults = ExchangeFaults()
        specs = tuple(s for s in DEFAULT_SYMBOLS if s.name in symbols)
        self.market = Market(symbols=specs, seed=market_seed)
        self._wall_ms = wall_ms
        self.clock_offset_ms = 0  # the exchange's clock skew
        self.engine = Engine(self.market, balances, now_ms=self.now_ms)
        now = self.now_ms()
        self.market.seed_history(now)
        for book in self.market.books.values():
            self.market.regenerate(book, now)
        self.public = PublicApi(self.market, self.now_ms)
        self.private = PrivateApi(self.engine)
        routes = {**self.public.routes(), **self.private.routes()}
        self.routes = {(m, t.lower()): h for (m, t), h in routes.items() if "{" not in t}
        self.templated = [((m, template_pattern(t)), h) for (m, t), h in routes.items()
                          if "{" in t]
        # Observers (the world's invariants): a submit about to execute, and its outcome.
        self.on_submit: Callable[[dict[str, Any]], None] = lambda _f: None
        self.on_submitted: Callable[[dict[str, Any], int, bool], None] = \
            lambda _f, _s, _lost: None
        self.requests = 0

    def now_ms(self) -> int:
        return self._wall_ms() + self.clock_offset_ms

    def transport(self, who: str) -> ExchangeTransport:
        return ExchangeTransport(self, who)

    # --- the market --------------------------------------------------------------------
    def tick(self) -> None:
        now = self.now_ms()
        t = self.loop.time()
        for symbol, book in self.market.books.items():
            if self.faults.frozen_until.get(symbol, 0.0) > t:
                continue
            self.market.walk(book, now)
            self.engine.match_resting(symbol)

    def mark(self, symbol: str) -> Decimal:
        book = self.market.books[symbol]
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None
        return (bid + ask) / 2

    # --- one request ---------------------------------------------------------------------
    async def handle(self, who: str, method: str, path: str, params: dict[str, str] | None,
                     body: bytes | None, timeout_s: float) -> HttpResponse:
        self.requests += 1
        f = self.faults
        rng = self.rng
        lpath = path.lower().rstrip("/")
        write = method in ("POST", "DELETE")
        await asyncio.sleep(rng.uniform(*HTTP_LATENCY))
        now = self.loop.time()
        if f.outage_until > now:
            self.trace.note("x_outage", who, f"{method} {lpath}")
            if rng.random() < 0.5:
                raise ConnectError("simulated outage: connection refused")
            return _status(503)
        roll = rng.random()
        for p, what in ((f.connect_refused, "refused"), (f.timeout, "timeout"),
                        (f.server_error, "5xx"), (f.rate_limited, "429")):
            p = max(p, 0.0)  # DRAWN_NEVER: switched off, the roll is still drawn
            if roll < p:
                self.trace.note(f"x_{what}", who, f"{method} {lpath}")
                if what == "refused":
                    raise ConnectError("simulated: connection refused")
                if what == "timeout":
                    await asyncio.sleep(timeout_s)
                    raise ExchangeTimeout("simulated: no answer")
                if what == "5xx":
                    return _status(503)
                return HttpResponse(429, {"retry-after": "1"}, encode(
                    {"success": False, "message": "TOO_MANY_REQUESTS", "code": 429}))
            roll -= p
        query: MultiDict[str] = MultiDict(params or {})
        ctx: dict[str, Any] = {"path": lpath}
        if method == "POST" and lpath == "/api/v1/order":
            fields: dict[str, Any] = {}
            if body:
                decoded = decode_body(body)
                if isinstance(decoded, dict):
                    fields.update(decoded)
            fields.update(query)
            ctx["fields"] = fields
            self.on_submit(fields)
        handler = self.routes.get((method, lpath))
        if handler is None:
            for (m, pattern), candidate in self.templated:
                if m == method and pattern.match(lpath):
                    handler = candidate
                    break
        if handler is None:
            return _status(404)
        response = await handler(_Request(method, lpath, query), ctx)  # type: ignore[arg-type]
        raw = bytes(response.body)  # type: ignore[arg-type]
        lost = write and rng.random() < f.drop_after_accept
        if "fields" in ctx:
            self.on_submitted(ctx["fields"], response.status, lost)
        self.trace.add("x", who, f"{method} {lpath}?{urlencode(sorted(query.items()))} "
                       f"{response.status}", raw)
        if lost:
            self.trace.note("x_dropped", who, f"{method} {lpath}")
            await asyncio.sleep(timeout_s)
            raise ExchangeTimeout("simulated: executed, answer lost")
        if lpath == "/api/v1/users/transactions/trade" and response.status == 200:
            raw = self._trades_faults(raw)
        await asyncio.sleep(rng.uniform(*HTTP_LATENCY))
        return HttpResponse(response.status, {}, raw)

    def _trades_faults(self, raw: bytes) -> bytes:
        f = self.faults
        lagging = f.trades_lag_until > self.loop.time()
        repeat = f.repeat_trade and self.rng.random() < f.repeat_trade
        if not (lagging or repeat):
            return raw
        doc = msgspec.json.decode(raw)
        rows = doc.get("data") or []
        if lagging:
            cutoff = self.now_ms() - int(f.trades_lag_s * 1000)
            rows = [r for r in rows if int(r["timestamp"]) <= cutoff]
        if repeat and rows:
            rows.append(rows[self.rng.randrange(len(rows))])
            self.trace.note("x_repeat_trade", "exchange", "")
        doc["data"] = rows
        return encode(doc)


def _status(code: int) -> HttpResponse:
    return HttpResponse(code, {}, encode({"success": False, "message": "SERVICE_UNAVAILABLE",
                                          "code": code}))


class ExchangeTransport:
    """``shared.btcturk.http.HttpTransport`` for one client of the in-process exchange."""

    def __init__(self, exchange: InProcessExchange, who: str) -> None:
        self.exchange = exchange
        self.who = who

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: bytes | None = None,
                      timeout_s: float = 5.0) -> HttpResponse:
        return await self.exchange.handle(self.who, method, path, params, body, timeout_s)

    def close(self) -> None:
        return None
