"""The BTCTurk venue (live, and paper against the simulator, which speaks the same API):
REST for every write and read, and BTCTurk's private WebSocket as a wake-up source.

REST stays the source of truth. The private socket (paper/live, ``executor.private_ws``)
only *wakes* the executor: an event (441 match, 423 trade, 451 insert, 452 delete) goes to
the executor's sync, which refreshes that order and user trades by REST, so state changes
and fills keep one code path. How far the socket is trusted is ``PrivateWsWatch``
(privatews.py, pure): while it is trusted the periodic poll stretches to
``ws_poll_interval_s``, otherwise it is back to ``order_poll_interval_s`` at once. Our
socket has no public channels, so it pings every ``WS_HEARTBEAT_S``: a healthy quiet
socket then never looks stalled, a dead one does within ``WS_STALL_TIMEOUT_S``. A socket
error never stops the executor (the socket is made anew).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Container, Mapping
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.executor.db import OrderRow
from actors.executor.venues.base import EventSink, Spawn
from actors.executor.venues.dryrun import SimFill
from actors.executor.venues.privatews import PrivateWsWatch
from bus.messages import Msg, PortfolioSnapshot
from shared.btcturk.client import BtcTurkClient
from shared.btcturk.models import ExchangeOrder, UserTrade
from shared.btcturk.ws import BtcTurkWebSocket, WsConnected, WsDisconnected
from shared.clock import Clock

WS_STALL_TIMEOUT_S = 10.0
WS_HEARTBEAT_S = 4.0
# A poll-found change of our order with no private event this close to it is "missed".
WS_MISSED_GRACE_S = 2.0
WS_LOGIN_WAIT_S = 5.0  # connected this long without a login answer: said once


class BtcTurkVenue:
    name = "btcturk"
    sends = True
    follows = True
    read_block: str | None = None
    subscriptions: tuple[str, ...] = ()

    def __init__(self, client: BtcTurkClient, *, ws_url: str, credentials: tuple[str, str],
                 private_ws: bool, fast_poll_s: float, slow_poll_s: float,
                 counters: Counter[str], clock: Clock, ws_session: Any = None) -> None:
        self.client = client
        self.ws_session = ws_session  # None: the socket makes its own aiohttp session
        self.ws_url = ws_url
        self.key, self.secret = credentials
        self.private_ws = private_ws
        self.counters = counters
        self.clock = clock
        self.watch = PrivateWsWatch(fast_poll_s, slow_poll_s, WS_MISSED_GRACE_S)
        self.ws: BtcTurkWebSocket | None = None
        self._enabled = False
        self._conn: tuple[int, float] = (0, 0.0)  # (connection number, when)
        self._login_failed_seen = 0
        self._login_warned = 0  # connection number last warned about
        self._on_event: EventSink | None = None

    # --- writes and reads: REST -------------------------------------------------------
    async def submit(self, symbol: str, side: str, quantity: Decimal, price: Decimal,
                     client_order_id: str) -> int:
        sub = await self.client.submit_order(symbol, side, "limit",  # type: ignore[arg-type]
                                             quantity, price, client_order_id)
        return sub.id

    async def cancel(self, order_id: int) -> None:
        await self.client.cancel_order(order_id)

    async def get_order(self, order_id: int) -> ExchangeOrder:
        return await self.client.get_order(order_id)

    async def open_orders(self, pair: str | None = None) -> list[ExchangeOrder]:
        return await self.client.open_orders(pair)

    async def all_orders(self, pair: str, start_ms: int) -> list[ExchangeOrder]:
        return await self.client.all_orders(pair, start_ms=start_ms)

    async def user_trades(self, pair: str | None, start_ms: int,
                          skip_ids: Container[int]) -> list[UserTrade]:
        return await self.client.user_trades(pair, start_ms=start_ms, skip_ids=skip_ids)

    async def balances(self) -> list[tuple[str, Decimal, Decimal]]:
        return [(b.asset, b.free, b.locked) for b in await self.client.balances()]

    # --- the private WebSocket --------------------------------------------------------
    def start(self, spawn: Spawn, on_event: EventSink) -> None:
        if not self.private_ws:
            logger.info("executor: private WebSocket off (executor.private_ws = false)")
            return
        if not (self.key and self.secret):
            logger.warning("executor: private WebSocket off: no credentials")
            return
        self._enabled = True
        self._on_event = on_event
        spawn(self._run(), "private-ws")

    async def _run(self) -> None:
        """Runs the socket; a new one when the watch asks for a reconnect (stop())."""
        while True:
            self.ws = BtcTurkWebSocket(
                self.ws_url, subscriptions=[], on_event=self._event,
                api_key=self.key, api_secret=self.secret, stall_timeout_s=WS_STALL_TIMEOUT_S,
                heartbeat_s=WS_HEARTBEAT_S, session=self.ws_session,
                mono_ns=self.clock.mono_ns, wall_ns=self.clock.wall_ns)
            self._login_failed_seen = 0
            try:
                await self.ws.run()
            except Exception:  # noqa: BLE001 - the socket never takes the executor down
                self.counters["ws_errors"] += 1
                logger.exception("executor: private WebSocket failed; starting a new one")
                await asyncio.sleep(1.0)

    async def _event(self, event: object) -> None:
        match event:
            case WsConnected():
                # Our own numbering: a reconnect by the watch makes a new client object.
                self.counters["ws_connects"] += 1
                self._conn = (self.counters["ws_connects"], self.clock.mono_ns() / 1e9)
                logger.info("executor: private WebSocket connected (#{})",
                            self.counters["ws_connects"])
            case WsDisconnected():
                self.watch.on_down()
                self.counters["ws_disconnects"] += 1
            case _:
                assert self._on_event is not None
                await self._on_event(event)

    def events_up(self) -> bool:
        ws = self.ws
        return ws is not None and ws.connected and ws.logged_in

    def poll_interval(self) -> float:
        return self.watch.poll_interval(self.events_up())

    def on_event_for(self, client_order_id: str, now_mono: float) -> None:
        self.watch.on_event(client_order_id, now_mono)

    def on_poll_changes(self, client_order_ids: list[str], now_mono: float,
                        was_up: bool) -> None:
        self.watch.on_poll_changes(client_order_ids, now_mono, was_up and self.events_up())

    def http_statuses(self) -> Mapping[int, int]:
        return self.client.http_statuses

    def rate_waits(self) -> int:
        return self.client.rate_waits

    def status(self) -> str:
        if not self._enabled:
            return "off"
        return "connected" if self.watch.trusted(self.events_up()) else "down"

    def check(self, now_mono: float) -> None:
        """From the poll loop: login failures (said once per connection), a socket that
        stays unanswered, and events the socket missed (trust withdrawn, reconnect)."""
        ws = self.ws
        if ws is None:
            return
        conn, since = self._conn
        # Connects the exchange refused (429: the IP's 15 a minute are spent), for status.
        self.counters["ws_connect_refused"] = ws.counters.get("connect_refused", 0)
        failed = ws.counters.get("login_failed", 0)
        if failed > self._login_failed_seen:
            self.counters["ws_login_failed"] += failed - self._login_failed_seen
            self._login_failed_seen = failed
            if self._login_warned != conn:
                self._login_warned = conn
                logger.warning("executor: private WebSocket login refused (connection #{}); "
                               "following orders by polling", conn)
        elif (ws.connected and not ws.logged_in and now_mono - since > WS_LOGIN_WAIT_S
              and self._login_warned != conn):
            self._login_warned = conn
            logger.warning("executor: private WebSocket not logged in {} s after connecting "
                           "(connection #{}); following orders by polling",
                           WS_LOGIN_WAIT_S, conn)
        missed = self.watch.check(now_mono)
        if missed:
            self.counters["ws_missed_events"] += len(missed)
            logger.warning("executor: private WebSocket missed events of {}; polling every "
                           "{} s until it delivers again, reconnecting", missed[:5],
                           self.watch.fast_s)
            ws.stop()

    # --- nothing on the bus, no recorded snapshot -------------------------------------
    def on_bus(self, body: Msg, open_orders: Callable[[str], list[OrderRow]]
               ) -> list[tuple[OrderRow, SimFill, str]]:
        return []

    async def recorded_portfolio(self) -> PortfolioSnapshot | None:
        return None

    async def close(self) -> None:
        if self.ws is not None:
            self.ws.stop()
        await self.client.close()
