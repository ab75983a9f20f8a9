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


def test_the_tape_snapshot_is_the_same_with_its_row_cache() -> None:
    """The walk's save (every 30 s) reuses rows of closed minutes: the snapshot must equal
    one made from scratch at every point, the newest (still changing) minute included."""
    market = Market(seed=3)
    market.seed_history(1_767_603_600_000)
    for i in range(600):
        for book in market.books.values():
            market.walk(book, 1_767_603_600_000 + i * 7_000)
            market.record_trade(book, book.bids[0][0], Decimal("0.001"), 0,
                                1_767_603_600_000 + i * 7_000)
        if i % 37 == 0:
            for book in market.books.values():
                fresh = [[c.start_s, str(c.open), str(c.high), str(c.low), str(c.close),
                          str(c.volume), str(c.notional)] for c in book.tape.minutes]
                assert book.tape.snapshot() == fresh
