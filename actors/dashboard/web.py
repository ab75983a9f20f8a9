"""The dashboard's HTTP side (aiohttp): pages, live events, metrics and the operator
commands, behind the access token.

Routes (all need the token: ``?token=`` once, which sets a SameSite=Strict cookie, or
``Authorization: Bearer`` for scrapers):
- ``/`` → ``/overview``; ``/<page>`` for each page; ``/order/<client order id>`` (the
  order as the bus told it); ``/why/<order or intent id>`` (``btcbot-supervisor why``);
- ``/events?page=P``: server-sent events, the page's view as JSON at every status poll;
- ``/api/view/<page>``: the same view once, as JSON;
- ``/metrics``: Prometheus text format;
- ``POST /api/confirm`` ``{"command"}`` → a one-time confirm token for that command;
- ``POST /api/command`` ``{"command", "confirm_token", "reason"}`` → sent to the
  supervisor as the CLI sends it, audited either way. POSTs also need the
  ``X-Btcbot-Token`` header (no cross-site form can set it).
Anything else is 404; no or a wrong token is 401.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from loguru import logger

from actors.dashboard.access import COMMANDS, ConfirmTokens, same
from actors.dashboard.audit import AuditLog
from actors.dashboard.metrics import CONTENT_TYPE, Metrics
from actors.dashboard.model import BusModel
from actors.dashboard.statuswatch import StatusWatch
from actors.dashboard.views import PAGE_NAMES, PAGES, build, header, order_detail

HERE = Path(__file__).resolve().parent
COOKIE = "btcbot_dashboard"
MAX_BODY = 4096  # a command is a few short fields
KEEPALIVE_S = 15.0

# command name → coroutine sending it; returns the supervisor's answer or raises
Sender = Callable[[str, bool, str], Awaitable[str]]
# an order or intent id → (found, the text timeline of `btcbot-supervisor why`)
Explainer = Callable[[str], Awaitable[tuple[bool, str]]]
WHY_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


@dataclass
class Hub:
    """What the web side reads and calls; owned by the actor."""

    token: str
    watch: StatusWatch
    model: BusModel
    metrics: Metrics
    audit: AuditLog
    send: Sender
    explain: Explainer
    limits: dict[str, str]
    counters: dict[str, int]
    confirms: ConfirmTokens = field(default_factory=ConfirmTokens)
    tick: int = 0
    clients: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _cache: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    async def notify(self) -> None:
        """A new status arrived: every event stream sends its page once."""
        self.tick += 1
        async with self._changed:
            self._changed.notify_all()

    async def wait_tick(self, seen: int, wait_s: float) -> int:
        """The current tick, once it differs from ``seen`` or ``wait_s`` passed."""
        try:
            async with asyncio.timeout(wait_s), self._changed:
                await self._changed.wait_for(lambda: self.tick != seen)
        except TimeoutError:
            pass
        return self.tick

    def view(self, page: str) -> dict[str, Any]:
        return build(page, self.watch, self.model, self.limits, time.monotonic())

    def view_json(self, page: str) -> bytes:
        """One encoding per page per tick, however many browsers watch it."""
        cached = self._cache.get(page)
        if cached is not None and cached[0] == self.tick:
            return cached[1]
        data = json.dumps(self.view(page), separators=(",", ":")).encode()
        self._cache[page] = (self.tick, data)
        return data


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def _token_of(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    return request.query.get("token") or request.cookies.get(COOKIE, "")


def build_app(hub: Hub) -> web.Application:
    env = _env()

    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        token = _token_of(request)
        if not token or not same(token, hub.token):
            hub.counters["unauthorized"] += 1
            return web.Response(status=401, text="401: the dashboard needs its token; "
                                "run `btcbot-supervisor dashboard` for the URL\n")
        if request.method == "POST" and not same(request.headers.get("X-Btcbot-Token", ""),
                                                 hub.token):
            hub.counters["unauthorized"] += 1
            return web.Response(status=401, text="401: POST needs the X-Btcbot-Token header\n")
        if "token" in request.query and request.method == "GET":
            # Trade the URL's token for a cookie and drop it from the address bar.
            resp = web.HTTPFound(request.path if request.path != "/" else "/overview")
            resp.set_cookie(COOKIE, hub.token, httponly=True, samesite="Strict",
                            path="/")
            return resp
        try:
            return await handler(request)
        except web.HTTPNotFound:
            hub.counters["not_found"] += 1
            raise

    def page_html(page: str, title: str, view: dict[str, Any]) -> web.Response:
        html = env.get_template("page.html").render(
            pages=PAGES, page=page, title=title, view=view, token=hub.token)
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": CSP,
                                     "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "no-referrer"})

    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/overview")

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info["page"]
        if name not in PAGE_NAMES:
            raise web.HTTPNotFound()
        return page_html(name, dict(PAGES)[name], hub.view(name))

    async def order(request: web.Request) -> web.StreamResponse:
        coid = request.match_info["coid"]
        view = {"page": "order", "header": header(hub.watch),
                "cards": order_detail(coid, hub.model)}
        return page_html("order", f"Order {coid}", view)

    async def why(request: web.Request) -> web.StreamResponse:
        ident = request.match_info["ident"]
        if not WHY_ID.match(ident):
            raise web.HTTPBadRequest(text="not an order or intent id")
        hub.counters["why"] += 1
        found, text = await hub.explain(ident)
        view = {"page": "why", "header": header(hub.watch), "cards": [
            {"id": "why", "kind": "pre", "title": f"why {ident}", "text": text,
             "c": "" if found else "bad"}]}
        return page_html("why", f"why {ident}", view)

    async def api_view(request: web.Request) -> web.StreamResponse:
        name = request.match_info["page"]
        if name not in PAGE_NAMES:
            raise web.HTTPNotFound()
        return web.Response(body=hub.view_json(name), content_type="application/json")

    async def events(request: web.Request) -> web.StreamResponse:
        name = request.query.get("page", "overview")
        if name not in PAGE_NAMES:
            raise web.HTTPNotFound()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        await resp.prepare(request)
        hub.clients += 1
        hub.counters["event_streams"] += 1
        try:
            seen = -1
            while True:
                tick = await hub.wait_tick(seen, KEEPALIVE_S)
                if tick == seen:
                    await resp.write(b": keepalive\n\n")
                    continue
                seen = tick
                await resp.write(b"data: " + hub.view_json(name) + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.clients -= 1
        return resp

    async def metrics(request: web.Request) -> web.StreamResponse:
        hub.counters["scrapes"] += 1
        return web.Response(body=hub.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def read_json(request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY,
                                                actual_size=request.content_length)
        try:
            body = json.loads(await request.content.read(MAX_BODY + 1) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body is not a JSON object")
        return body

    async def confirm(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        command = str(body.get("command", ""))
        if command not in COMMANDS:
            hub.counters["bad_commands"] += 1
            return web.json_response({"ok": False, "error": f"unknown command {command!r}"},
                                     status=400)
        return web.json_response({"ok": True, "command": command,
                                  "confirm_token": hub.confirms.issue(command),
                                  "prompt": COMMANDS[command][2]})

    async def command(request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        name = str(body.get("command", ""))
        reason = str(body.get("reason", ""))[:200] or "operator"
        peer = request.remote or "?"
        if name not in COMMANDS:
            hub.counters["bad_commands"] += 1
            return web.json_response({"ok": False, "error": f"unknown command {name!r}"},
                                     status=400)
        refused = hub.confirms.redeem(str(body.get("confirm_token", "")), name)
        if refused is not None:
            hub.counters["commands_refused"] += 1
            hub.audit.record(command=name, reason=reason, peer=peer, result="refused",
                             detail=refused)
            return web.json_response({"ok": False, "error": refused}, status=403)
        sup_command, value, _ = COMMANDS[name]
        try:
            detail = await hub.send(sup_command, value, f"dashboard: {reason}")
        except Exception as exc:  # the supervisor said no, or is not there: say so
            hub.counters["commands_failed"] += 1
            hub.audit.record(command=name, reason=reason, peer=peer, result="failed",
                             detail=str(exc))
            return web.json_response({"ok": False, "error": str(exc)}, status=502)
        hub.counters["commands_sent"] += 1
        hub.audit.record(command=name, reason=reason, peer=peer, result="ok", detail=detail)
        return web.json_response({"ok": True, "detail": detail})

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.router.add_get("/", index)
    app.router.add_get("/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/view/{page}", api_view)
    app.router.add_post("/api/confirm", confirm)
    app.router.add_post("/api/command", command)
    app.router.add_get("/order/{coid}", order)
    app.router.add_get("/why/{ident}", why)
    app.router.add_static("/static/", HERE / "static", show_index=False)
    app.router.add_get("/{page}", page)
    logger.debug("dashboard: routes ready")
    return app


# Scripts and styles only from this server; nothing inline can run (a second line of
# defence behind escaping).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
