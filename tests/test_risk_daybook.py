"""Risk's daily loss survives a restart of risk (issue 15): the day's baseline is
persisted (actors/risk/daybook.py) and a new risk adopts it while the day is the same."""

from __future__ import annotations

import os
import signal
from decimal import Decimal as D
from pathlib import Path

import pytest

from actors.risk import daybook
from actors.risk.daybook import DayBaseline, DayBookError
from shared.tradingday import TradingDay
from tests.helpers import wait_for


def test_saved_baseline_loads_back_exactly(tmp_path: Path) -> None:
    td = TradingDay.named("Europe/Istanbul", 0)
    path = daybook.path_in(tmp_path / "data")
    assert daybook.load(path, td) is None
    base = DayBaseline(739000, D("-12.34567891"), True)
    daybook.save(path, td, base)
    assert daybook.load(path, td) == base
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not path.with_name(path.name + ".tmp").exists()


def test_a_baseline_of_another_day_boundary_is_not_today(tmp_path: Path) -> None:
    path = daybook.path_in(tmp_path)
    daybook.save(path, TradingDay.named("Europe/Istanbul", 0), DayBaseline(5, D(1), True))
    assert daybook.load(path, TradingDay.named("UTC", 0)) is None
    assert daybook.load(path, TradingDay.named("Europe/Istanbul", 6)) is None


@pytest.mark.parametrize("text", ["", "{", '{"boundary": "Europe/Istanbul@0"}',
                                  '{"boundary": "Europe/Istanbul@0", "day": 1, '
                                  '"start_net": "x", "marked": true}'])
def test_an_unreadable_baseline_is_refused_never_replaced(tmp_path: Path, text: str) -> None:
    path = daybook.path_in(tmp_path)
    path.write_text(text)
    with pytest.raises(DayBookError, match="risk.day"):
        daybook.load(path, TradingDay.named("Europe/Istanbul", 0))


def _risk(p) -> dict:
    return next(a for a in p.status()["actors"] if a["name"] == "risk")


def test_kill_9_of_risk_mid_day_keeps_the_daily_loss(make_pipeline, tmp_path: Path) -> None:
    """A paper session trades (fees alone make the net PnL move from the baseline), risk
    is SIGKILLed; the restarted risk counts from the same baseline, so its daily loss is
    not reset to zero (a fresh baseline would be the current net PnL)."""
    p = make_pipeline()
    p.start()

    def moved() -> dict | None:
        r = _risk(p)
        info = r["info"]
        return r if info and D(info.get("daily_loss", "0")) != 0 else None

    before = wait_for(moved, timeout=90, interval=1.0, what="risk counting a daily loss")
    base_before = D(before["info"]["day_start_net"])
    assert (tmp_path / "data" / "risk.day").exists()
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> dict | None:
        r = _risk(p)
        return r if (r["pid"] not in (None, before["pid"]) and r["ready"] and r["info"]
                     and r["counters"].get("snapshots", 0) >= 1) else None

    after = wait_for(restarted, timeout=60, interval=0.5, what="risk restarted and synced")
    assert D(after["info"]["day_start_net"]) == base_before
    # The loss is still counted: a baseline retaken now would make it (about) zero.
    assert D(after["info"]["daily_loss"]) != 0, after["info"]
