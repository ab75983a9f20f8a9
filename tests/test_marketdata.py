"""Marketdata pure parts: book assembly, freshness (fail closed), REST fallback choice,
exchangeinfo -> SymbolRules."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.marketdata.book import LocalBook, is_sane
from actors.marketdata.freshness import FreshnessTracker, needs_rest
from actors.marketdata.rules import UnknownSymbols, rules_for
from shared.btcturk.models import ExchangeInfo, SymbolInfo

D = Decimal
MS = 1_000_000


def test_snapshot_then_diffs_and_top():
    b = LocalBook("BTCTRY")
    assert not b.has_data
    assert not b.apply_diff(1, [(D("1"), D("1"), 1)], [])  # no snapshot yet: ignored
    b.apply_snapshot(10, [(D("99"), D("1")), (D("98"), D("2"))],
                     [(D("101"), D("1")), (D("102"), D("3"))])
    assert b.apply_diff(11, [(D("100"), D("5"), 1), (D("98"), D("0"), 3)],
                        [(D("101"), D("0"), 3)])
    bids, asks = b.top(10)
    assert bids == [(D("100"), D("5")), (D("99"), D("1"))]
    assert asks == [(D("102"), D("3"))]
    assert not b.apply_diff(11, [(D("97"), D("1"), 1)], [])  # not newer: ignored
    assert b.top(1) == ([(D("100"), D("5"))], [(D("102"), D("3"))])


def test_sanity():
    assert is_sane([(D(1), D(1))], [(D(2), D(1))])
    assert not is_sane([(D(2), D(1))], [(D(2), D(1))])  # crossed/locked
    assert not is_sane([], [(D(2), D(1))])


def test_freshness_unknown_is_stale_then_fresh_then_stale():
    f = FreshnessTracker(["A", "B"], max_age_ns=2000 * MS)
    statuses, changed = f.evaluate(0)
    assert [s.fresh for s in statuses] == [False, False]
    assert {s.reason for s in statuses} == {"no_data"}
    assert len(changed) == 2  # first evaluation publishes everything
    f.observe("A", "ws", 1000 * MS)
    _, changed = f.evaluate(1500 * MS)
    assert [(c.symbol, c.fresh, c.age_ms) for c in changed] == [("A", True, 500)]
    _, changed = f.evaluate(2000 * MS)
    assert changed == []  # no change, nothing to publish
    _, changed = f.evaluate(3001 * MS)
    assert [(c.symbol, c.fresh, c.reason) for c in changed] == [
        ("A", False, "max_data_age_exceeded")]
    assert not f.any_fresh(3001 * MS)


def test_older_observation_does_not_refresh():
    f = FreshnessTracker(["A"], max_age_ns=1000 * MS)
    f.observe("A", "ws", 5000 * MS)
    f.observe("A", "rest", 1000 * MS)
    assert f.status("A", 5500 * MS).fresh and f.status("A", 5500 * MS).source == "ws"


@pytest.mark.parametrize("kw, expected", [
    (dict(source="rest", rest_fallback=False, ws_connected=True, ws_age_ns=0), True),
    (dict(source="ws", rest_fallback=False, ws_connected=False, ws_age_ns=None), False),
    (dict(source="ws", rest_fallback=True, ws_connected=False, ws_age_ns=0), True),
    (dict(source="ws", rest_fallback=True, ws_connected=True, ws_age_ns=None), True),
    (dict(source="ws", rest_fallback=True, ws_connected=True, ws_age_ns=6000 * MS), True),
    (dict(source="ws", rest_fallback=True, ws_connected=True, ws_age_ns=100 * MS), False),
])
def test_rest_fallback_choice(kw, expected):
    assert needs_rest(ws_stale_ns=5000 * MS, **kw) is expected


def sym(name, num, scale_n, scale_d, frac, min_total=D("99.91")) -> SymbolInfo:
    return SymbolInfo(name=name, name_normalized=f"{num}_TRY", numerator=num, denominator="TRY",
                      numerator_scale=scale_n, denominator_scale=scale_d, has_fraction=frac,
                      tick_size=D("10"), min_price=D("1"), max_price=None,
                      min_total=min_total, status="TRADING")


def test_rules_for_configured_symbols():
    info = ExchangeInfo(server_time_ms=0, symbols=[sym("BTCTRY", "BTC", 8, 2, False),
                                                   sym("ETHTRY", "ETH", 8, 2, True)])
    rules = rules_for(info, ["BTCTRY", "ETHTRY"])
    assert rules["BTCTRY"].price_scale == 0  # hasFraction false: integer prices
    assert rules["ETHTRY"].price_scale == 2
    assert rules["BTCTRY"].qty_scale == 8 and rules["BTCTRY"].min_total == D("99.91")
    assert rules["ETHTRY"].max_price == 0  # absent bound travels as 0
    assert (rules["ETHTRY"].base, rules["ETHTRY"].quote) == ("ETH", "TRY")


def test_unknown_symbol_fails_loudly():
    info = ExchangeInfo(server_time_ms=0, symbols=[sym("BTCTRY", "BTC", 8, 2, False)])
    with pytest.raises(UnknownSymbols, match="DOGETRY"):
        rules_for(info, ["BTCTRY", "DOGETRY"])
