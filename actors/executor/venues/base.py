"""The venue interface: everything the executor asks of the place its orders go.

The executor's order flow, probes and sync speak only this protocol; which venue is
behind it (BTCTurk or the simulator over REST + private WebSocket, dry-run, or the
replay mirror) is decided once, at wiring time, by ``venues.make_venue``.

Capabilities instead of mode branches:
- ``sends``: a submit leaves the process (False: the order is only reserved, as the
  replay mirror does; nothing is ever sent or tracked).
- ``read_block``: why the venue cannot be read (None: it can). Probes, polling and
  reconcile consult it; dry-run has nothing to read.
- ``follows``: the executor runs its background loops (probes, polls, snapshots) for
  this venue. The mirror has none: every event it would publish is in the recording.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Coroutine, Mapping
from decimal import Decimal
from typing import Any, Protocol

from actors.executor.db import OrderRow
from actors.executor.venues.dryrun import SimFill
from bus.messages import Msg, PortfolioSnapshot
from shared.btcturk.models import ExchangeOrder, UserTrade

# A private event (shared.btcturk.ws types: order insert/match/delete, user trade,
# connect/disconnect) handed to the executor's sync, which decides what to refresh.
EventSink = Callable[[Any], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, Any], str], Any]
BalanceRow = tuple[str, Decimal, Decimal]  # (asset, free, locked)
OpenRows = Callable[[str], list[OrderRow]]  # the DB's open orders of a symbol


class Venue(Protocol):
    name: str
    sends: bool
    follows: bool
    read_block: str | None
    subscriptions: tuple[str, ...]

    # --- writes ---------------------------------------------------------------------
    async def submit(self, symbol: str, side: str, quantity: Decimal, price: Decimal,
                     client_order_id: str) -> int:
        """Place a limit order; returns the exchange order id. Raises the
        shared.btcturk.errors taxonomy: RejectedError (no effect), RetryableError
        (provably not sent), anything else (may have reached the venue)."""
        ...

    async def cancel(self, order_id: int) -> None: ...

    # --- reads ----------------------------------------------------------------------
    async def get_order(self, order_id: int) -> ExchangeOrder: ...

    async def open_orders(self, pair: str | None = None) -> list[ExchangeOrder]: ...

    async def all_orders(self, pair: str, start_ms: int) -> list[ExchangeOrder]: ...

    async def user_trades(self, pair: str | None, start_ms: int,
                          skip_ids: Container[int]) -> list[UserTrade]: ...

    async def balances(self) -> list[BalanceRow]: ...

    # --- private events and polling cadence -----------------------------------------
    def start(self, spawn: Spawn, on_event: EventSink) -> None:
        """Start whatever pushes private events (a no-op where none exist)."""
        ...

    def poll_interval(self) -> float:
        """Seconds between REST polls now (slower while private events are trusted)."""
        ...

    def check(self, now_mono: float) -> None:
        """Periodic health check of the event source (from the poll loop)."""
        ...

    def on_event_for(self, client_order_id: str, now_mono: float) -> None:
        """A private event concerned one of our orders (proof the source delivers)."""
        ...

    def on_poll_changes(self, client_order_ids: list[str], now_mono: float,
                        was_up: bool) -> None:
        """The periodic poll changed these orders (witness for missed events)."""
        ...

    def events_up(self) -> bool: ...

    def status(self) -> str:
        """The private event source: off / connected / down."""
        ...

    def http_statuses(self) -> Mapping[int, int]:
        """The exchange's HTTP answers so far by status code (429s included); empty for
        a venue that makes no HTTP calls."""
        ...

    def rate_waits(self) -> int:
        """Requests held back by the client's rate windows (or a 429's Retry-After)."""
        ...

    # --- bus input and snapshot source (dry-run fills, the replay mirror) -----------
    def on_bus(self, body: Msg, open_orders: OpenRows) -> list[tuple[OrderRow, SimFill, str]]:
        """A message on one of ``subscriptions``; returns fills it simulates (dry-run:
        row, fill, trade id) for the executor to record like any other fill."""
        ...

    async def recorded_portfolio(self) -> PortfolioSnapshot | None:
        """A snapshot that replaces the DB's (the mirror's recorded one), or None."""
        ...

    async def close(self) -> None: ...


async def find_by_client_id(venue: Venue, symbol: str, client_order_id: str,
                            since_s: float) -> ExchangeOrder | None:
    """Open orders first (cheap, current), then all orders since ``since_s`` less two
    minutes; None when the venue lists neither."""
    for eo in await venue.open_orders(symbol):
        if eo.client_order_id == client_order_id:
            return eo
    for eo in await venue.all_orders(symbol, int((since_s - 120) * 1000)):
        if eo.client_order_id == client_order_id:
            return eo
    return None
