"""Per-hop latency of the pipeline, from the envelopes' stamps (pure, no I/O).

Every stamp compared here is CLOCK_MONOTONIC of one host (the envelope's ``mono_ns``,
a book's ``recv_mono_ns``, an intent's ``book_mono_ns``), except the exchange hop,
which compares the exchange's own time stamp with our wall clock on receipt (so it
includes the clock offset to the exchange; on the simulator both are this host's).

Hops, in pipeline order:
- ``exchange→marketdata``: exchange time stamp of a book → marketdata's receipt (REST
  books only: BTCTurk's WebSocket order-book messages carry no time stamp);
- ``marketdata``: marketdata's receipt of a book → its publication on the bus;
- ``book→intent``: marketdata's receipt of the book → the strategy publishing its intent;
- ``intent→decision``: the intent published → risk publishing its decision on it;
- ``intent→order``: the intent published → the executor's first order event for it;
- ``bus→dashboard``: any message published → received here (the bus's own cost, plus
  this process's queueing: an upper bound of what a subscriber waits).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

HOPS = ("exchange→marketdata", "marketdata", "book→intent", "intent→decision",
        "intent→order", "bus→dashboard")
WINDOW = 2048  # samples kept per hop for the quantiles
PENDING_INTENTS = 4096  # intents remembered for matching their decision and order


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted, non-empty list."""
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


class HopStats:
    """Latency samples (milliseconds) per hop; ``on_sample(hop, seconds)`` is told of
    each one (the Prometheus histograms)."""

    def __init__(self, on_sample: Callable[[str, float], None] | None = None) -> None:
        self.samples: dict[str, deque[float]] = {h: deque(maxlen=WINDOW) for h in HOPS}
        self.counts: dict[str, int] = dict.fromkeys(HOPS, 0)
        self._intent_mono: OrderedDict[str, int] = OrderedDict()
        self._ordered: set[str] = set()
        self._on_sample = on_sample

    def add(self, hop: str, ms: float) -> None:
        if ms < 0:  # clocks of two hosts, or a stamp we cannot trust: not a latency
            return
        self.samples[hop].append(ms)
        self.counts[hop] += 1
        if self._on_sample is not None:
            self._on_sample(hop, ms / 1000.0)

    def book(self, exchange_ts_ms: int, recv_wall_ns: int, recv_mono_ns: int,
             published_mono_ns: int) -> None:
        if exchange_ts_ms > 0:
            self.add("exchange→marketdata", recv_wall_ns / 1e6 - exchange_ts_ms)
        if recv_mono_ns > 0:
            self.add("marketdata", (published_mono_ns - recv_mono_ns) / 1e6)

    def intent(self, intent_id: str, published_mono_ns: int, book_mono_ns: int) -> None:
        if book_mono_ns > 0:
            self.add("book→intent", (published_mono_ns - book_mono_ns) / 1e6)
        self._intent_mono[intent_id] = published_mono_ns
        if len(self._intent_mono) > PENDING_INTENTS:
            old, _ = self._intent_mono.popitem(last=False)
            self._ordered.discard(old)

    def decision(self, intent_id: str, published_mono_ns: int) -> None:
        start = self._intent_mono.get(intent_id)
        if start is not None:
            self.add("intent→decision", (published_mono_ns - start) / 1e6)

    def order(self, intent_id: str, published_mono_ns: int) -> None:
        start = self._intent_mono.get(intent_id)
        if start is not None and intent_id not in self._ordered:
            self._ordered.add(intent_id)
            self.add("intent→order", (published_mono_ns - start) / 1e6)

    def transit(self, published_mono_ns: int, received_mono_ns: int) -> None:
        self.add("bus→dashboard", (received_mono_ns - published_mono_ns) / 1e6)

    def summary(self) -> list[dict[str, float | int | str | None]]:
        rows: list[dict[str, float | int | str | None]] = []
        for hop in HOPS:
            values = sorted(self.samples[hop])
            rows.append({
                "hop": hop, "count": self.counts[hop], "window": len(values),
                "p50_ms": quantile(values, 0.50) if values else None,
                "p99_ms": quantile(values, 0.99) if values else None,
                "max_ms": values[-1] if values else None,
            })
        return rows
