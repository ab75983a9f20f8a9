"""The one PnL definition (shared/pnl.py): net PnL equals the change of account equity
at the mark, computed independently from the balances."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import pnl

D = Decimal
PRICE = st.integers(100_000, 300_000).map(lambda c: D(c) / 100)  # 1000.00 .. 3000.00
QTY = st.integers(1, 500_000).map(lambda s: D(s) / 10**8 * 1000)  # up to 5 units, 8 dp-ish
FEE_RATE = st.sampled_from([D(0), D("0.0005"), D("0.0009"), D("0.002")])


@st.composite
def orders(draw: st.DrawFn) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """Orders of either side, each filled in 1..4 partial fills at its price (fills of
    one order can also come at better prices), fee a rate of the notional rounded to
    the kuruş as BTCTurk charges it."""
    fills = []
    for _ in range(draw(st.integers(0, 12))):
        side = draw(st.sampled_from(["buy", "sell"]))
        price = draw(PRICE)
        total = draw(QTY)
        rate = draw(FEE_RATE)
        parts = draw(st.integers(1, 4))
        left = total
        for i in range(parts):
            qty = left if i == parts - 1 else (left * draw(st.sampled_from(
                [D("0.25"), D("0.5"), D("0.1")]))).quantize(D("1e-8"))
            if qty <= 0:
                continue
            left -= qty
            fee = (price * qty * rate).quantize(D("0.01"))
            fills.append((side, price, qty, fee))
    return fills


@settings(max_examples=300, deadline=None)
@given(orders(), PRICE, PRICE)
def test_net_pnl_is_the_change_of_equity_at_the_mark(fills, bid, ask) -> None:
    bid, ask = min(bid, ask), max(bid, ask)
    start_quote = D("100000")
    quote, base = start_quote, D(0)
    pos = pnl.PositionState()
    for side, price, qty, fee in fills:
        pos = pnl.apply_fill(pos, side, price, qty, fee)
        # the balances, kept apart from the accounting: what the exchange would show
        if side == "buy":
            quote -= price * qty + fee
            base += qty
        else:
            quote += price * qty - fee
            base -= qty
    mark = pnl.mark_price(bid, ask)
    assert mark == (bid + ask) / 2
    figures = pnl.position_pnl(pos.quantity, pos.avg_cost, pos.realized_pnl, pos.fees, mark)
    equity_change = (quote + base * mark) - start_quote
    assert pos.quantity == base
    assert pos.fees == sum((f for *_, f in fills), D(0))
    # Exact but for the cost of a partial close, kept to 1e-12 TRY each (pnl.COST_QUANTUM),
    # and the average cost's division: a stated tolerance of 1e-9 TRY.
    assert abs(figures.net - equity_change) <= D("1e-9"), (figures, equity_change)
    assert figures.net == figures.realized + figures.unrealized - figures.fees


def test_realized_is_gross_and_fees_apart() -> None:
    p = pnl.apply_fill(pnl.PositionState(), "buy", D(100), D(2), D("0.2"))
    p = pnl.apply_fill(p, "sell", D(110), D(2), D("0.22"))
    assert (p.quantity, p.realized_pnl, p.fees) == (0, D(20), D("0.42"))
    f = pnl.position_pnl(p.quantity, p.avg_cost, p.realized_pnl, p.fees, None)
    assert f.net == D("19.58") and f.unrealized == 0


def test_mark_is_the_mid_or_the_side_there_is() -> None:
    assert pnl.mark_price(D(99), D(101)) == D(100)
    assert pnl.mark_price(None, D(101)) == D(101)
    assert pnl.mark_price(D(99), None) == D(99)
    assert pnl.mark_price(None, None) is None
    assert pnl.unrealized(D(2), D(90), D(100)) == D(20)
    assert pnl.unrealized(D(-2), D(110), D(100)) == D(20)
    assert pnl.unrealized(D(1), D(90), None) == 0


def test_total_sums_every_figure() -> None:
    t = pnl.total([pnl.Pnl(D(1), D(2), D("0.5"), D(10)), pnl.Pnl(D(-3), D(0), D(1), None)])
    assert (t.realized, t.unrealized, t.fees, t.net, t.mark) == (D(-2), D(2), D("1.5"),
                                                                  D("-1.5"), None)


def test_a_negative_fee_is_refused() -> None:
    with pytest.raises(ValueError):
        pnl.apply_fill(pnl.PositionState(), "buy", D(1), D(1), D(-1))
