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

The market moves on a timer (``tick``): the seeded walk, resting orders matched, and the
public WebSocket frames published (``exchange_sim.app.market_tick``'s steps), unless a
symbol's book is frozen.

The venue keeps its account in ``exchange_sim``'s state file (``state_store.attach``, as
the simulator's ``--state``): every change is committed before the answer about it
leaves, the market walk every 30 s. ``crash()`` kills it as SIGKILL would (no final
save; an answer in flight is lost), ``restart()`` continues from the file: balances,
orders and fills as told to clients, the walk from its last save.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
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
from exchange_sim.state_store import StateStore, attach
from shared.btcturk.http import ConnectError, ExchangeTimeout, HttpResponse
from simulate.trace import Trace
from simulate.wsock import MemWsSession, SimWsHub

HTTP_LATENCY = (0.002, 0.030)  # one way, seconds: a nearby exchange
MARKET_SAVE_S = 30  # ticks (seconds) between saves of the walk (exchange_sim.app's)


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
                 market_seed: int, state_path: Path,
                 credentials: dict[str, str] | None = None) -> None:
        self.loop = loop
        self.rng = rng
        self.trace = trace
        self.faults = ExchangeFaults()
        self.specs = tuple(s for s in DEFAULT_SYMBOLS if s.name in symbols)
        self.balances = balances
        self.market_seed = market_seed
        self.state_path = state_path
        self._wall_ms = wall_ms
        self.clock_offset_ms = 0  # the exchange's clock skew
        # Observers (the world's invariants): a submit about to execute, and its outcome.
        self.on_submit: Callable[[dict[str, Any]], None] = lambda _f: None
        self.on_submitted: Callable[[dict[str, Any], int, bool], None] = \
            lambda _f, _s, _lost: None
        # The book of a pair moved on (its change set and timestamp): the invariants'
        # record of when each published version stopped being the market.
        self.on_book: Callable[[str, int, int], None] = lambda _s, _cs, _ts: None
        self.requests = 0
        self.generation = 0  # +1 at every crash: an answer from an older one is lost
        self.down = False
        self.store: StateStore | None = None
        self._ticks = 0
        self.ws = SimWsHub(self, credentials or {})
        self._boot()

    def _boot(self) -> None:
        """A fresh process: market and engine from the seed, then the state file's
        account on top (none the first time: the starting balances)."""
        self.market = Market(symbols=self.specs, seed=self.market_seed)
        self.engine = Engine(self.market, dict(self.balances), now_ms=self.now_ms)
        now = self.now_ms()
        self.market.seed_history(now)
        for book in self.market.books.values():
            self.market.regenerate(book, now)
        self.store = attach(self.state_path, self.market, self.engine, self.market_seed, now)
        self.ws.boot()
        self.public = PublicApi(self.market, self.now_ms)
        self.private = PrivateApi(self.engine)
        routes = {**self.public.routes(), **self.private.routes()}
        self.routes = {(m, t.lower()): h for (m, t), h in routes.items() if "{" not in t}
        self.templated = [((m, template_pattern(t)), h) for (m, t), h in routes.items()
                          if "{" in t]

    def persist(self) -> None:
        """The engine's changes, committed (exchange_sim.app's persist)."""
        if self.store is not None and self.engine.changes:
            self.store.save(self.engine.account, self.engine.take_changes())

    def crash(self) -> None:
        """SIGKILL: nothing more is saved, every answer in flight is lost, and until
        ``restart`` every connection is refused."""
        if self.down:
            return
        self.down = True
        self.generation += 1
        self.ws.crash()
        assert self.store is not None
        self.store.close()  # the kernel closes the file and drops the lock
        self.store = None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def restart(self) -> None:
        if not self.down:
            return
        self._boot()
        self.down = False

    def now_ms(self) -> int:
        return self._wall_ms() + self.clock_offset_ms

    def transport(self, who: str) -> ExchangeTransport:
        return ExchangeTransport(self, who)

    def ws_session(self, who: str) -> MemWsSession:
        return MemWsSession(self.ws, who)

    # --- the market --------------------------------------------------------------------
    def tick(self) -> None:
        """``exchange_sim.app.market_tick``: per pair the walk, crossed resting orders
        filled, the account committed, the public frames published; then the ticker."""
        if self.down:
            return
        now = self.now_ms()
        t = self.loop.time()
        for symbol, book in self.market.books.items():
            if self.faults.frozen_until.get(symbol, 0.0) > t:
                continue
            self.ws.publish_trade(symbol, self.market.walk(book, now))
            self.engine.match_resting(symbol)
            self.persist()
            self.on_book(symbol, book.change_set, book.timestamp_ms)
            self.ws.publish_book(symbol)
        self.ws.publish_ticker(now)
        self._ticks += 1
        if self._ticks % MARKET_SAVE_S == 0 and self.store is not None:
            self.store.save_market(self.market.snapshot())

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
        if self.down:
            self.trace.note("x_down", who, f"{method} {lpath}")
            raise ConnectError("simulated: the exchange process is down")
        generation = self.generation
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
        self.persist()  # before the answer leaves, as exchange_sim.app does
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
        if self.generation != generation:
            # The process died with the answer on its way: done or not, the client
            # hears nothing (it times out).
            self.trace.note("x_crash_lost", who, f"{method} {lpath}")
            await asyncio.sleep(max(0.0, timeout_s - 2 * HTTP_LATENCY[1]))
            raise ExchangeTimeout("simulated: the exchange died before answering")
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
