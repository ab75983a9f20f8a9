"""What the venues that never reach an exchange share (dry-run, the replay mirror): there
is nothing to read, so every read raises ``VenueUnreadable`` (callers check
``read_block`` first and say why instead), and there is no private feed, no poll to
follow and no HTTP status to count."""

from __future__ import annotations

from collections.abc import Container, Mapping
from decimal import Decimal
from typing import Any

from shared.btcturk.models import ExchangeOrder, UserTrade


class VenueUnreadable(Exception):
    """This venue has nothing to read (callers check ``read_block`` first)."""


class LocalVenue:
    read_block: str | None = "dry_run"

    async def get_order(self, order_id: int) -> ExchangeOrder:
        raise VenueUnreadable(self.read_block)

    async def open_orders(self, pair: str | None = None) -> list[ExchangeOrder]:
        raise VenueUnreadable(self.read_block)

    async def all_orders(self, pair: str, start_ms: int) -> list[ExchangeOrder]:
        raise VenueUnreadable(self.read_block)

    async def user_trades(self, pair: str | None, start_ms: int,
                          skip_ids: Container[int]) -> list[UserTrade]:
        raise VenueUnreadable(self.read_block)

    async def balances(self) -> list[tuple[str, Decimal, Decimal]]:
        raise VenueUnreadable(self.read_block)

    def start(self, spawn: Any, on_event: Any) -> None:
        return None

    def poll_interval(self) -> float:
        return 1.0

    def check(self, now_mono: float) -> None:
        return None

    def on_event_for(self, client_order_id: str, now_mono: float) -> None:
        return None

    def on_poll_changes(self, client_order_ids: list[str], now_mono: float,
                        was_up: bool) -> None:
        return None

    def events_up(self) -> bool:
        return False

    def http_statuses(self) -> Mapping[int, int]:
        return {}

    def rate_waits(self) -> int:
        return 0

    def status(self) -> str:
        return "off"
