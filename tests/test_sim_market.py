"""The simulated market's fast level amounts equal the plain formula, value for value
(the walk is the exchange simulator's, and every simulation's trace depends on it)."""

from __future__ import annotations

import random
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange_sim.market import DEFAULT_SYMBOLS, DEPTH, Book, Market, _micros, on_grid


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


def reference_regenerate(market: Market, rng: random.Random, book: Book) -> tuple[list, list]:
    """Market.regenerate as first written (the plain formula per level)."""
    spec = book.spec
    q = spec.grid
    step = max(q, on_grid(book.mid * market.step, q, ROUND_UP))
    half = max(q, on_grid(book.mid * market.spread / 2, q, ROUND_UP))
    best_bid = on_grid(book.mid - half, q, ROUND_DOWN)
    best_ask = on_grid(book.mid + half, q, ROUND_UP)
    if best_ask <= best_bid:
        best_ask = best_bid + q
    bid_prices = [best_bid - i * step for i in range(DEPTH)]
    bids = [[p, reference_amount(rng, spec, p)] for p in bid_prices if p > 0]
    asks = [[best_ask + i * step, reference_amount(rng, spec, best_ask)] for i in range(DEPTH)]
    return bids, asks


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), symbol=st.sampled_from(DEFAULT_SYMBOLS),
       mid_factor=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("50"),
                              places=6, allow_nan=False, allow_infinity=False))
def test_regenerate_is_the_plain_formula(seed: int, symbol: object, mid_factor: Decimal) -> None:
    """The inlined levels (divisor once per level, the factor's micro-units from
    _micros) equal the formula as first written, bit for bit, down to books so cheap
    that bid levels fall below zero."""
    market = Market(seed=seed)
    reference = random.Random()
    reference.setstate(market.rng.getstate())
    book = Book(spec=symbol, mid=symbol.start_price * mid_factor)  # type: ignore[attr-defined]
    bids, asks = reference_regenerate(market, reference, book)
    market.regenerate(book, 1)
    assert book.bids == bids and book.asks == asks
    assert [[str(p), str(a)] for p, a in book.bids + book.asks] == \
        [[str(p), str(a)] for p, a in bids + asks]
    assert market.rng.getstate() == reference.getstate()


@settings(max_examples=500, deadline=None)
@given(r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_micros_is_the_double_rounding(r: float) -> None:
    u = 0.2 + (1.6 - 0.2) * r
    assert _micros(r) == round(round(u, 6) * 1e6)


def test_micros_near_half_a_millionth() -> None:
    """Where u * 1e6 lands next to a half, the fast rounding could pick the other
    neighbour: those take the double rounding itself."""
    for k in range(200_000, 1_600_000, 997):
        for d in (-1e-12, -3e-11, 0.0, 3e-11, 1e-12):
            r = ((k + 0.5) / 1e6 + d - 0.2) / (1.6 - 0.2)
            u = 0.2 + (1.6 - 0.2) * r
            assert _micros(r) == round(round(u, 6) * 1e6)


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
