"""Samples over sliding time windows (the last minute, the last 15 minutes) with bounded
memory, and their quantiles (pure: the caller passes the time).

Why per-second buckets with a small reservoir each, not one reservoir per window:
- a window slides by dropping whole expired buckets, so a sample leaves the window exactly
  when it is ``span`` old; one reservoir for 15 minutes cannot forget its oldest samples
  without remembering when each was taken, and would mix a quiet hour into a busy minute;
- one set of buckets serves every window up to the longest (1 min = the last 60 buckets);
- memory is bounded by ``span_s × per_second`` samples whatever the rate: each bucket
  keeps at most ``per_second`` values (Vitter's algorithm R: a uniform sample of that
  second) and counts every value, so the count, rate and maximum stay exact.

While no second of the window held more than ``per_second`` samples the quantiles are
exact (they equal those of the raw samples: tests/test_bus_health.py proves it). Beyond
that each kept value stands for ``count / kept`` samples of its second, and the quantile
is the weighted one: a busy second counts as much as it happened, not as much as it kept.

Quantile definition: nearest rank, the smallest sample ``x`` with at least ``q × n``
samples ≤ ``x`` (so p50 and p99 are always values that occurred).
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from itertools import accumulate, chain, repeat

PER_SECOND = 32  # values kept per second: 15 min × 32 × 8 B = 230 kB per window at most
LONG_S = 60  # a longer window re-sorts its values every last_s / LONG_S seconds at most


def nearest_rank(sorted_values: list[float] | array, q: float) -> float:
    """The nearest-rank ``q`` quantile of a sorted, non-empty sequence."""
    n = len(sorted_values)
    return sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))]


@dataclass(frozen=True)
class WindowStats:
    count: int  # samples in the window (every one, kept or not)
    per_s: float  # count over the window's span (or the time observed, if shorter)
    p50: float | None
    p99: float | None
    max: float | None

    def as_dict(self, unit: str = "_ms", digits: int = 3) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, digits)
        return {"count": self.count, "per_s": round(self.per_s, 3), f"p50{unit}": r(self.p50),
                f"p99{unit}": r(self.p99), f"max{unit}": r(self.max)}


class _Bucket:
    __slots__ = ("second", "count", "kept", "max")

    def __init__(self, second: int) -> None:
        self.second = second
        self.count = 0
        self.kept: array = array("d")
        self.max = -math.inf


class Window:
    """Values by the second they were seen, for the last ``span_s`` seconds."""

    def __init__(self, span_s: int = 900, *, per_second: int = PER_SECOND,
                 started_s: float = 0.0, seed: int = 0) -> None:
        if span_s < 1 or per_second < 1:
            raise ValueError("span_s and per_second must be >= 1")
        self.span_s = span_s
        self.per_second = per_second
        self.started_s = started_s
        self.total = 0  # since creation
        self._buckets: deque[_Bucket] = deque()
        # Deterministic: the same samples in the same order keep the same values.
        self._rng = random.Random(seed)
        self._cache: dict[int, tuple[tuple[int, int], WindowStats]] = {}

    def add(self, now_s: float, value: float) -> None:
        second = math.floor(now_s)
        b = self._buckets[-1] if self._buckets else None
        if b is None or second > b.second:
            b = _Bucket(second)
            self._buckets.append(b)
            self._expire(second)
        # (A value stamped in an earlier second than the newest bucket — a caller's clock
        # is monotonic, so only ties at the boundary — joins the newest bucket.)
        b.count += 1
        self.total += 1
        if value > b.max:
            b.max = value
        if len(b.kept) < self.per_second:
            b.kept.append(value)
        else:
            j = self._rng.randrange(b.count)
            if j < self.per_second:
                b.kept[j] = value

    def _expire(self, now_second: int) -> None:
        while self._buckets and now_second - self._buckets[0].second >= self.span_s:
            self._buckets.popleft()

    def kept(self) -> int:
        """Values held now (the memory bound's subject)."""
        return sum(len(b.kept) for b in self._buckets)

    def stats(self, now_s: float, last_s: int | None = None) -> WindowStats:
        """Count, rate, p50, p99 and max over the last ``last_s`` seconds (the current
        second and the ``last_s - 1`` before it); the whole span by default.

        A result is reused while nothing was added in the same second (status may be
        asked by several watchers in one second). A window longer than a minute sorts
        its values at most every ``last_s / 60`` seconds (15 s for 15 minutes: a full
        one takes up to ~100 ms on a loaded 2-core machine, in the supervisor's loop);
        in between its count, rate and maximum are exact and its quantiles the last
        computed, capped by the current maximum."""
        last = self.span_s if last_s is None else min(last_s, self.span_s)
        second = math.floor(now_s)
        cached = self._cache.get(last)
        if cached is not None:
            (at, total), result = cached
            if at == second and total == self.total:
                return result
            if (last > LONG_S and result.p99 is not None and result.p50 is not None
                    and 0 <= second - at < last // LONG_S):
                self._expire(second)
                buckets, count, observed = self._select(now_s, second, last)
                if count:
                    top = max(b.max for b in buckets)
                    p99 = min(result.p99, top)
                    return WindowStats(count, count / observed, min(result.p50, p99), p99,
                                       top)
        result = self._compute(now_s, second, last)
        self._cache[last] = ((second, self.total), result)
        return result

    def _select(self, now_s: float, second: int,
                last: int) -> tuple[list[_Bucket], int, float]:
        buckets = [b for b in self._buckets if second - b.second < last]
        observed = max(1.0, min(float(last), now_s - self.started_s))
        return buckets, sum(b.count for b in buckets), observed

    def _compute(self, now_s: float, second: int, last: int) -> WindowStats:
        self._expire(second)
        buckets, count, observed = self._select(now_s, second, last)
        if not count:
            return WindowStats(0, 0.0, None, None, None)
        top = max(b.max for b in buckets)
        if all(b.count == len(b.kept) for b in buckets):
            values = list(chain.from_iterable(b.kept for b in buckets))
            values.sort()
            return WindowStats(count, count / observed, nearest_rank(values, 0.50),
                               nearest_rank(values, 0.99), top)
        p50, p99 = _weighted(buckets, count)
        return WindowStats(count, count / observed, p50, p99, top)


def _weighted(buckets: list[_Bucket], count: int) -> tuple[float, float]:
    """Nearest-rank p50 and p99 where each kept value weighs ``count / kept`` of its
    bucket: the smallest value whose cumulative weight reaches ``q × count``.

    Weights are summed per distinct value (equal values are interchangeable in a
    quantile), so only floats are sorted, and the sums and the search run in C
    (accumulate, bisect): a full 15-minute window takes milliseconds, not a tenth of a
    second as a loop over (value, weight) pairs does."""
    weight: dict[float, float] = {}
    get = weight.get
    for b in buckets:
        w = b.count / len(b.kept)
        kept = b.kept
        if weight.keys().isdisjoint(kept) and len(set(kept)) == len(kept):
            weight.update(zip(kept, repeat(w)))
        else:  # a value seen before: its weights add up
            for v in kept:
                weight[v] = get(v, 0.0) + w
    values = sorted(weight)
    cumulative = list(accumulate(map(weight.__getitem__, values)))
    slack = 1e-9 * count  # the float sum of the weights (their total is `count`)
    last = len(values) - 1
    p50 = values[min(last, bisect_left(cumulative, 0.50 * count - slack))]
    p99 = values[min(last, bisect_left(cumulative, 0.99 * count - slack))]
    return p50, p99
