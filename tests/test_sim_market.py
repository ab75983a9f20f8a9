"""The simulated market's fast level amounts equal the plain formula, value for value
(the walk is the exchange simulator's, and every simulation's trace depends on it)."""

from __future__ import annotations

import random
from decimal import ROUND_DOWN, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_sim.market import DEFAULT_SYMBOLS, Market


def reference_amount(rng: random.Random, spec: object, price: Decimal) -> Decimal:
    """The formula as first written: Decimal(str(round(uniform, 6))), max()."""
    factor = Decimal(str(round(rng.uniform(0.2, 1.6), 6)))
    amount = (spec.level_notional * factor / price).quantize(  # type: ignore[attr-defined]
        spec.qty_quantum, rounding=ROUND_DOWN)  # type: ignore[attr-defined]
    return max(amount, spec.qty_quantum)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32), symbol=st.sampled_from(DEFAULT_SYMBOLS),
       price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999"),
                         places=2, allow_nan=False, allow_infinity=False))
def test_level_amount_is_the_plain_formula(seed: int, symbol: object, price: Decimal) -> None:
    market = Market(seed=seed)
    reference = random.Random()
    reference.setstate(market.rng.getstate())
    for _ in range(20):
        fast = market._level_amount(symbol, price)  # type: ignore[arg-type]
        plain = reference_amount(reference, symbol, price)
        assert fast == plain and str(fast) == str(plain)


def test_a_walk_is_seeded() -> None:
    a, b = Market(seed=7), Market(seed=7)
    for _ in range(50):
        for name in a.books:
            a.walk(a.books[name], 1_000)
            b.walk(b.books[name], 1_000)
            assert a.books[name].bids == b.books[name].bids
            assert a.books[name].asks == b.books[name].asks
