"""Numbers printed plainly (issue 15): every Decimal in status is plain digits, exact."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from bus.messages import Position, SymbolPnl
from shared.plain import plain, plain_builtins

decimals = st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**12,
                       max_value=10**12, places=8)


@given(decimals)
def test_plain_is_exact_and_never_exponent_form(x: Decimal) -> None:
    text = plain(x)
    assert "E" not in text.upper()
    assert Decimal(text) == x


def test_structs_at_any_depth_are_plain() -> None:
    rows = [SymbolPnl(symbol="BTCTRY", position=Decimal("0E-8"), avg_cost=Decimal("1E+6"),
                      realized=Decimal("0E-8"), unrealized=Decimal("-1E-8"),
                      fees=Decimal("0.00000000"), mark=Decimal("2.5E+6"), net=Decimal("0E-8"))]
    doc = plain_builtins({"pnl": rows, "pos": [Position(symbol="X", quantity=Decimal("0E-8"),
                                                        avg_cost=Decimal(0),
                                                        realized_pnl=Decimal(0),
                                                        fees=Decimal(0))]})
    row = doc["pnl"][0]
    assert row["realized"] == "0.00000000" and row["position"] == "0.00000000"
    assert row["avg_cost"] == "1000000" and row["mark"] == "2500000"
    assert row["unrealized"] == "-0.00000001"
    assert doc["pos"][0]["quantity"] == "0.00000000"
    assert "E" not in repr(doc)
