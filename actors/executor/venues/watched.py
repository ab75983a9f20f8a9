"""A venue wrapper that watches reachability: every call's outcome is reported, so an
outage is seen wherever it shows first (a poll, a submit, a probe, a reconcile).

Unreachable means the venue did not answer usefully at all: connection refused or
failed, a timeout, a connection lost mid-answer, or a 5xx. A rejection (4xx) or a 429
is an answer: the venue is there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container
from decimal import Decimal
from typing import Any, TypeVar

from actors.executor.venues.base import Venue
from shared.btcturk.errors import BtcTurkError
from shared.btcturk.models import ExchangeOrder, UserTrade

UNREACHABLE_KINDS = frozenset({"connect_failed", "timeout", "connection_lost", "server_error"})
T = TypeVar("T")


def is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, BtcTurkError) and exc.kind in UNREACHABLE_KINDS


class WatchedVenue:
    def __init__(self, inner: Venue, on_ok: Callable[[], None],
                 on_unreachable: Callable[[str, BtcTurkError], None]) -> None:
        self._inner = inner
        self._on_ok = on_ok
        self._on_unreachable = on_unreachable

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _watch(self, what: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except BtcTurkError as exc:
            if is_unreachable(exc):
                self._on_unreachable(what, exc)
            else:
                self._on_ok()  # an answer, if a refusal
            raise
        self._on_ok()
        return result

    async def submit(self, symbol: str, side: str, quantity: Decimal, price: Decimal,
                     client_order_id: str) -> int:
        return await self._watch("submit", self._inner.submit(symbol, side, quantity, price,
                                                              client_order_id))

    async def cancel(self, order_id: int) -> None:
        await self._watch("cancel", self._inner.cancel(order_id))

    async def get_order(self, order_id: int) -> ExchangeOrder:
        return await self._watch("get_order", self._inner.get_order(order_id))

    async def open_orders(self, pair: str | None = None) -> list[ExchangeOrder]:
        return await self._watch("open_orders", self._inner.open_orders(pair))

    async def all_orders(self, pair: str, start_ms: int) -> list[ExchangeOrder]:
        return await self._watch("all_orders", self._inner.all_orders(pair, start_ms))

    async def user_trades(self, pair: str | None, start_ms: int,
                          skip_ids: Container[int]) -> list[UserTrade]:
        return await self._watch("user_trades",
                                 self._inner.user_trades(pair, start_ms, skip_ids))

    async def balances(self) -> list[tuple[str, Decimal, Decimal]]:
        return await self._watch("balances", self._inner.balances())
