"""Pure freshness bookkeeping for market data (no I/O, clock passed in).

A symbol is fresh when its last good book arrived at most ``max_age_ns`` ago.
Unknown (never received) is stale: consumers fail closed. ``evaluate`` reports
which symbols changed state so the actor can publish on change, and the actor
also republishes every status periodically for late joiners.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SymbolFreshness:
    symbol: str
    fresh: bool
    source: str
    age_ms: int | None
    reason: str


@dataclass
class FreshnessTracker:
    symbols: list[str]
    max_age_ns: int
    last_mono_ns: dict[str, int] = field(default_factory=dict)
    last_source: dict[str, str] = field(default_factory=dict)
    _published: dict[str, bool] = field(default_factory=dict)

    def observe(self, symbol: str, source: str, mono_ns: int) -> None:
        prev = self.last_mono_ns.get(symbol)
        if prev is None or mono_ns >= prev:
            self.last_mono_ns[symbol] = mono_ns
            self.last_source[symbol] = source

    def age_ns(self, symbol: str, now_mono_ns: int) -> int | None:
        last = self.last_mono_ns.get(symbol)
        return None if last is None else max(0, now_mono_ns - last)

    def status(self, symbol: str, now_mono_ns: int) -> SymbolFreshness:
        age = self.age_ns(symbol, now_mono_ns)
        source = self.last_source.get(symbol, "none")
        if age is None:
            return SymbolFreshness(symbol, False, source, None, "no_data")
        age_ms = age // 1_000_000
        if age > self.max_age_ns:
            return SymbolFreshness(symbol, False, source, age_ms, "max_data_age_exceeded")
        return SymbolFreshness(symbol, True, source, age_ms, "")

    def evaluate(self, now_mono_ns: int) -> tuple[list[SymbolFreshness], list[SymbolFreshness]]:
        """(all statuses, the ones whose fresh flag changed since the last call)."""
        statuses = [self.status(s, now_mono_ns) for s in self.symbols]
        changed = [st for st in statuses if self._published.get(st.symbol) != st.fresh]
        for st in changed:
            self._published[st.symbol] = st.fresh
        return statuses, changed

    def any_fresh(self, now_mono_ns: int) -> bool:
        return any(self.status(s, now_mono_ns).fresh for s in self.symbols)


def needs_rest(
    *, source: str, rest_fallback: bool, ws_connected: bool, ws_age_ns: int | None,
    ws_stale_ns: int,
) -> bool:
    """Should this symbol be polled over REST now? Always in ``rest`` mode; in ``ws``
    mode only as a fallback while the socket is down or this symbol's WS data is
    older than ``ws_stale_ns`` (never received counts as stale)."""
    if source == "rest":
        return True
    if not rest_fallback:
        return False
    if not ws_connected:
        return True
    return ws_age_ns is None or ws_age_ns > ws_stale_ns
