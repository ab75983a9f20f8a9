"""Server-side rate limits as BTCTurk documents them (btcturk-api.md section 8).

Each limit is a fixed window that starts at the first request to its endpoint ("the
rate-limit period starts at the first request", DOCS) and counts per policy key: the
client's IP for ``ip`` limits, the API key (X-PCK) for ``account`` limits. A request over
a limit is refused with 429, BTCTurk's body and a ``Retry-After`` header (whole seconds
until the window ends); refused requests do not count. Pure logic: callers pass the time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .catalog import template_pattern


@dataclass(frozen=True)
class Limit:
    count: int
    period_s: float
    policy: str  # "ip" or "account"

    @property
    def period_text(self) -> str:
        return f"{int(self.period_s // 60)}m" if self.period_s >= 60 else f"{int(self.period_s)}s"


# (method, path template) -> limits that all apply. Both order limits are documented as
# "account, ip": each is counted per account and per IP.
def _both(count: int, period_s: float) -> list[Limit]:
    return [Limit(count, period_s, "account"), Limit(count, period_s, "ip")]


TABLE: dict[tuple[str, str], list[Limit]] = {
    ("GET", "/api/v1/users/balances"): [Limit(120, 60, "ip")],
    ("POST", "/api/v1/order"): _both(300, 60) + _both(10, 1),
    ("DELETE", "/api/v1/order"): _both(300, 60) + _both(10, 1),
    ("GET", "/api/v1/order/{id}"): _both(900, 60) + _both(30, 1),
    ("GET", "/api/v1/openorders"): [Limit(300, 60, "ip")],
    ("GET", "/api/v1/allorders"): [Limit(300, 60, "ip")],
    ("GET", "/api/v1/trades"): [Limit(90, 60, "ip")],
    ("GET", "/api/v1/users/transactions/trade"): [Limit(120, 60, "ip")],
    ("GET", "/api/v1/users/transactions/crypto"): [Limit(90, 60, "ip")],
    ("GET", "/api/v1/users/transactions/fiat"): [Limit(90, 60, "ip")],
    ("GET", "/api/v2/ticker"): [Limit(600, 60, "ip")],
    ("GET", "/api/v2/orderbook"): [Limit(180, 60, "ip")],
    # The chart API (graph-api.btcturk.com): /v1/ohlcs, and 600 per 10 min for all of it.
    ("GET", "/v1/ohlcs"): [Limit(120, 60, "ip"), Limit(600, 600, "ip")],
    ("GET", "/v1/klines/history"): [Limit(600, 600, "ip")],
}
GRAPH_PATHS = ("/v1/ohlcs", "/v1/klines/history")  # share the graph API's 600/10 min


@dataclass
class _Window:
    start: float
    used: int = 0


@dataclass(frozen=True)
class Refusal:
    limit: Limit
    retry_after_s: int

    def body(self) -> dict[str, str | bool | int]:
        lim = self.limit
        details = f"Quota exceeded. Maximum allowed: {lim.count} per {lim.period_text}."
        if lim.policy == "account":
            details += f" Please try again in {self.retry_after_s} second(s)."
        return {"message": "TOO_MANY_REQUESTS", "success": False, "code": 429,
                "details": details, "limit": str(lim.count), "period": lim.period_text,
                "policy": lim.policy}


@dataclass
class RateLimiter:
    enabled: bool = True
    _windows: dict[tuple[str, int, str], _Window] = field(default_factory=dict)
    _rules: list[tuple[str, re.Pattern[str], str, list[Limit]]] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        for (method, template), limits in TABLE.items():
            self._rules.append((method, template_pattern(template), template, limits))

    def _rule(self, method: str, path: str) -> tuple[str, list[Limit]] | None:
        for rule_method, pattern, template, limits in self._rules:
            if rule_method == method and pattern.match(path):
                return template, limits
        return None

    def reset(self) -> None:
        self._windows.clear()

    def check(self, method: str, path: str, ip: str, api_key: str,
              now: float) -> Refusal | None:
        """Count this request, or refuse it (counting nothing) when a limit is spent."""
        if not self.enabled:
            return None
        rule = self._rule(method, path)
        if rule is None:
            return None
        template, limits = rule
        counted: list[_Window] = []
        for index, limit in enumerate(limits):
            who = api_key if limit.policy == "account" else ip
            shared = template in GRAPH_PATHS and limit.period_s == 600
            key = ("graph", 0, who) if shared else (f"{method} {template}", index, who)
            window = self._windows.get(key)
            if window is None or now >= window.start + limit.period_s:
                window = self._windows[key] = _Window(now)
            if window.used >= limit.count:
                self.refused += 1
                retry = max(1, math.ceil(window.start + limit.period_s - now))
                return Refusal(limit, retry)
            counted.append(window)
        for window in counted:
            window.used += 1
        return None


# WebSocket connects (btcturk-api.md section 8): "15 connection requests/min, then blocked
# 60s. Subscriptions do not count." Per IP (a connect carries no API key). Our reading of
# the undocumented details: the minute is a fixed window from the first connect, like the
# REST limits; the 16th connect in it starts the 60 s block; connects refused while blocked
# neither count nor extend the block; the refusal is the REST one (429 + Retry-After) on
# the upgrade request, so no socket is opened.
WS_CONNECTS = Limit(15, 60, "ip")
WS_BLOCK_S = 60.0


@dataclass
class WsConnectLimiter:
    enabled: bool = True
    _windows: dict[str, _Window] = field(default_factory=dict)
    _blocked_until: dict[str, float] = field(default_factory=dict)
    refused: int = 0

    def reset(self) -> None:
        self._windows.clear()
        self._blocked_until.clear()

    def check(self, ip: str, now: float) -> Refusal | None:
        """Count this connect, or refuse it (counting nothing)."""
        if not self.enabled:
            return None
        blocked = self._blocked_until.get(ip, 0.0)
        if now < blocked:
            self.refused += 1
            return Refusal(WS_CONNECTS, max(1, math.ceil(blocked - now)))
        window = self._windows.get(ip)
        if window is None or now >= window.start + WS_CONNECTS.period_s:
            window = self._windows[ip] = _Window(now)
        if window.used >= WS_CONNECTS.count:
            self._blocked_until[ip] = now + WS_BLOCK_S
            del self._windows[ip]  # after the block, a new minute starts
            self.refused += 1
            return Refusal(WS_CONNECTS, math.ceil(WS_BLOCK_S))
        window.used += 1
        return None
