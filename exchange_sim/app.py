"""The simulator as a program: wires the API areas over the engine and serves them (aiohttp).

One catch-all route dispatches on (method, lower-cased path), which gives BTCTurk's
case-insensitive routes (``/api/v2/orderbook`` and ``/api/v2/orderBook``) for free and lets
fault injection wrap every request uniformly. The areas live in their own modules:
public_api (public REST), private_api (authenticated REST), ws (WebSocket), admin (/sim/),
fault_injection; engine.py and market.py hold the pure matching and market model.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from .admin import AdminApi
from .auth_check import AuthChecker, AuthFailure
from .catalog import Catalog, template_pattern
from .engine import Engine
from .fault_injection import clear_ws_faults, post_faults, pre_faults
from .faults import FaultRegistry
from .market import Market
from .options import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimOptions, parse_balances
from .order_log import OrderLog, set_outcome
from .private_api import PrivateApi
from .public_api import PublicApi
from .rate_limits import RateLimiter, WsConnectLimiter
from .responses import Handler, decode_body, encode, error
from .state_store import StateStore, attach
from .ws import WsClient, WsHub

# v1 paths that need no API key (public trades also answer under v1).
PUBLIC_V1 = frozenset({"/api/v1/trades"})
MARKET_SAVE_S = 30.0  # how much random walk a SIGKILL may lose (nothing a client relies on)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "ExposureError",
    "SimHandle",
    "SimOptions",
    "Simulator",
    "WsClient",
    "parse_balances",
    "start_simulator",
]



HEALTH_PATH = "/health"

class ExposureError(ValueError):
    """The simulator was asked to listen where its admin API would be unprotected."""


class Simulator:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.market = Market(seed=options.seed)
        self.faults = FaultRegistry(options.seed)  # before the engine: now_ms reads it
        self.engine = Engine(
            self.market,
            options.balances,
            now_ms=self.now_ms,
            taker_fee=options.taker_fee,
            maker_fee=options.maker_fee,
            fee_tiers=options.fee_tiers,
        )
        self.auth = AuthChecker(options.credentials, options.nonce_window_ms)
        self.random_walk = options.random_walk
        self.order_log = OrderLog()
        self.rate_limiter = RateLimiter(enabled=options.rate_limits)
        self.ws_connects = WsConnectLimiter(enabled=options.rate_limits)
        self.ws = WsHub(self.market, self.engine, self.auth, self.faults, options.ws_heartbeat_s,
                        self.ws_connects)
        self.engine.emit_private = self.ws.publish_private
        self.engine.emit_trade = self.ws.publish_trade
        self._tasks: set[asyncio.Task[Any]] = set()
        now = self.now_ms()
        self.market.seed_history(now)
        for book in self.market.books.values():
            self.market.regenerate(book, now)
        self.store: StateStore | None = None
        if options.state_path:
            self._open_store(Path(options.state_path))
        self.public = PublicApi(self.market, self.now_ms)
        self.private = PrivateApi(self.engine)
        self.catalog = Catalog()
        routes = {**self.public.routes(), **self.private.routes()}
        # Exact paths in a dict (the hot path); ``{id}`` templates matched in order.
        self.routes: dict[tuple[str, str], Handler] = {
            (m, t.lower()): h for (m, t), h in routes.items() if "{" not in t
        }
        self.templated_routes = [
            ((m, template_pattern(t)), h) for (m, t), h in routes.items() if "{" in t
        ]
        self.admin_routes = AdminApi(self).routes()

    # ------------------------------------------------------------------ persistence

    def _open_store(self, path: Path) -> None:
        """Continue the account saved at ``path``, or start one there."""
        self.store = attach(path, self.market, self.engine, self.options.seed, self.now_ms())

    def _ceilings(self) -> dict[str, int]:
        return {**self.engine.id_ceilings(), "trade_id": self.market.trade_ids.ceiling}

    def persist(self) -> None:
        """Make the engine's changes durable. Called synchronously right after they happen,
        before the task yields, so no answer or WS frame about them leaves first."""
        if self.store is not None and self.engine.changes:
            self.store.save(self.engine.account, self.engine.take_changes())

    def save_market(self) -> None:
        if self.store is not None:
            self.store.save_market(self.market.snapshot())

    # ------------------------------------------------------------------ lifecycle

    def now_ms(self) -> int:
        skew = self.faults.clock_offset_ms() if self.faults.faults else 0
        return int(time.time() * 1000) + self.options.clock_offset_ms + skew

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def start(self) -> None:
        self.spawn(self._market_loop())

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.ws.close_all()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            self.persist()
            self.save_market()
            self.store.close()
            self.store = None

    def reset(self, balances: dict[str, Decimal] | None) -> None:
        """Admin reset: fresh account, order log, faults and nonces; books around the mids."""
        self.engine.reset(balances)
        if self.store is not None:
            self.store.initialize(self.engine.account, self.options.seed, self._ceilings())
        self.order_log.clear()
        self.rate_limiter.reset()
        self.ws_connects.reset()
        self.faults.clear()
        self.auth.reset()
        clear_ws_faults(self.ws)
        self.random_walk = self.options.random_walk
        now = self.now_ms()
        for book in self.market.books.values():
            self.market.regenerate(book, now)

    # ------------------------------------------------------------------ dispatch

    async def handle(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic_ns()
        path = request.path.lower().rstrip("/") or "/"
        if path in ("/", "/ws"):
            return await self.ws.handler(request)
        if path == HEALTH_PATH:
            # The process's liveness (the supervisor's probe), never faulted or rate
            # limited: an injected exchange outage is the exchange's, not a dead
            # simulator's, and must not get the simulator restarted (which ends it).
            return web.json_response({"ok": True})
        if path.startswith("/sim/"):
            if not self._admin_allowed(request):
                return error("Unauthorized - admin token required", 401, 401)
            admin = self.admin_routes.get((request.method, path))
            if admin is None:
                return error("NOT_FOUND", 404, 404)
            response = await admin(request, {})
            self.persist()
            return response
        return await self._api(request, path, received)

    def _admin_allowed(self, request: web.Request) -> bool:
        token = self.options.admin_token
        if token is None:
            return True  # loopback-only listener: the machine's users are trusted
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())

    async def _api(self, request: web.Request, path: str, received: int) -> web.StreamResponse:
        ctx: dict[str, Any] = {"path": path}
        if request.method == "POST" and path == "/api/v1/order":
            ctx["fields"] = await self._order_fields(request)
            ctx["log"] = self.order_log.log(ctx["fields"], received)
        fired = self.faults.http_faults(request.method, path)
        early = await pre_faults(fired, ctx)
        if early is not None:
            return early
        handler, status = self._route(request.method, path)
        if handler is None:
            return self._unrouted(status)
        refusal = self.rate_limiter.check(
            request.method, path, request.remote or "", request.headers.get("X-PCK", ""),
            time.monotonic(),
        )
        if refusal is not None:
            set_outcome(ctx, "rate_limited", None, 429)
            resp = web.Response(body=encode(refusal.body()), status=429,
                                content_type="application/json")
            resp.headers["Retry-After"] = str(refusal.retry_after_s)
            return resp
        if path.startswith("/api/v1/") and path not in PUBLIC_V1:
            try:
                key = self.auth.check(request.headers, self.now_ms())
            except AuthFailure as exc:
                set_outcome(ctx, "unauthorized", None, 401)
                return error(exc.message, exc.code, 401, success=True)
            if (key in self.options.read_only_keys and path == "/api/v1/order"
                    and request.method in ("POST", "DELETE")):
                set_outcome(ctx, "unauthorized:read_only_key", None, 401)
                return error("Unauthorized - Invalid Request", 1040, 401, success=True)
        response = await handler(request, ctx)
        self.persist()
        return await post_faults(fired, request, response, ctx)

    def _route(self, method: str, path: str) -> tuple[Handler | None, int]:
        """(handler, 0), or (None, 404 | 405 | 501) saying why there is none."""
        handler = self.routes.get((method, path))
        if handler is not None:
            return handler, 0
        for (m, pattern), candidate in self.templated_routes:
            if m == method and pattern.match(path):
                return candidate, 0
        documented = self.catalog.methods_for(path)
        if method in documented:
            return None, 501
        implemented = any(p == path for _, p in self.routes) or any(
            pattern.match(path) for (_, pattern), _ in self.templated_routes
        )
        return None, 405 if documented or implemented else 404

    @staticmethod
    def _unrouted(status: int) -> web.Response:
        if status == 501:
            # Documented by BTCTurk but outside what the simulator models (the web/mobile
            # API, deposits, withdrawals, KYC...): fail loudly, never pretend.
            return error("NOT_MODELLED_BY_SIMULATOR", 501, 501)
        if status == 405:
            return error("METHOD_NOT_ALLOWED", 405, 405)
        return error("NOT_FOUND", 404, 404)

    @staticmethod
    async def _order_fields(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        fields: dict[str, Any] = {}
        if raw:
            try:
                decoded = decode_body(raw)
            except ValueError:  # msgspec.DecodeError is a ValueError
                decoded = None
            if isinstance(decoded, dict):
                fields.update(decoded)
        # Query string wins over the body, as on BTCTurk.
        fields.update(request.query)
        return fields

    # ------------------------------------------------------------------ market

    async def _market_loop(self) -> None:
        interval = self.options.book_interval_ms / 1000
        ticks_per_save = max(1, int(MARKET_SAVE_S / interval))
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            self.market_tick()
            ticks += 1
            if ticks % ticks_per_save == 0:
                self.save_market()

    def market_tick(self) -> None:
        """One book interval: walk, fill crossed resting orders, publish."""
        now = self.now_ms()
        for symbol, book in self.market.books.items():
            if self.faults.frozen(symbol):
                continue
            if self.random_walk:
                trade = self.market.walk(book, now)
                if trade is not None:
                    self.ws.publish_trade(symbol, trade)
            self.engine.match_resting(symbol)
            self.persist()
            self.ws.publish_book(symbol)
            self.ws.publish_obdiff(symbol)
        self.ws.publish_ticker(now)


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
    """Start in this event loop. ``port=0`` picks a free port (see ``handle.port``).

    Raises ExposureError for a non-loopback host without ``allow_remote`` + ``admin_token``.
    """
    opts = SimOptions.from_kwargs(**options)
    problem = opts.exposure_problem(host)
    if problem is not None:
        raise ExposureError(problem)
    sim = Simulator(opts)
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
