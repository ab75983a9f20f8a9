"""Simulator options: credentials, starting balances, walk, fees, listening policy."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .fees import DEFAULT_MAKER, DEFAULT_TAKER, Tier

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_API_SECRET = "YnRjYm90LWV4Y2hhbmdlLXNpbS1zZWNyZXQtdjEhIQ=="
DEFAULT_BALANCES = {
    "TRY": Decimal("100000"),
    "BTC": Decimal("0.5"),
    "ETH": Decimal("5"),
    "SOL": Decimal("50"),
    "USDT": Decimal("1000"),
}


def parse_balances(text: str | dict[str, Any] | None) -> dict[str, Decimal]:
    """``"TRY=100000,BTC=0.5"`` or a mapping -> {asset: Decimal}."""
    if text is None:
        return dict(DEFAULT_BALANCES)
    items = (
        text.items()
        if isinstance(text, dict)
        else (part.split("=", 1) for part in text.split(",") if part.strip())
    )
    return {str(k).strip().upper(): Decimal(str(v).strip()) for k, v in items}


@dataclass
class SimOptions:
    seed: int = 1
    credentials: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_API_KEY: DEFAULT_API_SECRET}
    )
    book_interval_ms: int = 250
    balances: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    random_walk: bool = True
    nonce_window_ms: int = 1000
    clock_offset_ms: int = 0
    taker_fee: Decimal = DEFAULT_TAKER
    maker_fee: Decimal = DEFAULT_MAKER
    # Volume tiers (fees.py); None: one tier of maker_fee/taker_fee.
    fee_tiers: tuple[Tier, ...] | None = None
    ws_heartbeat_s: float = 20.0
    rate_limits: bool = True  # BTCTurk's documented limits (429); off for benchmarks
    state_path: str | None = None  # None: the account lives in memory only
    allow_remote: bool = False  # listen on a non-loopback address (needs admin_token)
    # Set only with --allow-remote: then every /sim/ request must carry it (Bearer).
    admin_token: str | None = None
    # Keys allowed to read but not to trade: POST/DELETE /api/v1/order answers 401. BTCTurk
    # keys carry permissions but the exact refusal is undocumented; 401 with a documented
    # message is the closest known answer (for rehearsing `preflight`).
    read_only_keys: frozenset[str] = frozenset()

    @classmethod
    def from_kwargs(cls, **kw: Any) -> SimOptions:
        key, secret = kw.pop("api_key", None), kw.pop("api_secret", None)
        if key or secret:
            creds = dict(kw.pop("credentials", None) or {})
            creds[key or DEFAULT_API_KEY] = secret or DEFAULT_API_SECRET
            kw["credentials"] = creds
        if "balances" in kw:
            kw["balances"] = parse_balances(kw["balances"])
        return cls(**kw)

    def exposure_problem(self, host: str) -> str | None:
        """Why listening on ``host`` is refused, or None. The /sim/ admin API can move
        money and break the exchange, so it never reaches the network unprotected."""
        if not is_loopback(host) and not self.allow_remote:
            return (
                f"--host {host} is not a loopback address; the unauthenticated /sim/ admin "
                "API would be reachable from the network (pass --allow-remote and --admin-token)"
            )
        if self.allow_remote and not self.admin_token:
            return "--allow-remote needs --admin-token (or BTCBOT_SIM_ADMIN_TOKEN)"
        return None


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (the simulator's default exposure)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere: not provably loopback
