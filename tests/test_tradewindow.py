"""The executor's trade-read window (actors/executor/tradewindow.py)."""

from __future__ import annotations

from actors.executor.tradewindow import TradeWindow


def test_first_read_goes_back_to_the_oldest_open_order() -> None:
    w = TradeWindow(overlap_s=60)
    assert w.start_s(1_000.0, oldest_open_s=None) == 940.0
    assert w.start_s(1_000.0, oldest_open_s=100.0) == 40.0


def test_later_reads_start_at_the_last_successful_one_less_the_overlap() -> None:
    w = TradeWindow(overlap_s=60)
    w.read_ok(900.0)
    # The open order from t=100 no longer widens the window: its older fills were read.
    assert w.start_s(1_000.0, oldest_open_s=100.0) == 840.0
    w.read_ok(990.0)
    assert w.start_s(1_000.0, oldest_open_s=None) == 930.0
    # A read that started earlier but finished later does not move the window back...
    w.read_ok(950.0)
    assert w.synced_from == 990.0
    # ...and reads that keep failing leave it where the last good one started.
    assert w.start_s(5_000.0, oldest_open_s=None) == 930.0


def test_lookback_widens_the_window() -> None:
    w = TradeWindow(overlap_s=60)
    w.read_ok(990.0)
    assert w.start_s(1_000.0, None, lookback_s=3_600) == -2_600.0


def test_remembered_ids_are_bounded_oldest_first() -> None:
    w = TradeWindow(remember=3)
    for tid in (1, 2, 3):
        w.remember(tid)
    assert 1 in w and 3 in w
    w.remember(4)
    assert 1 not in w and 2 in w and 4 in w
