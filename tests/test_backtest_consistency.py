"""Consistency: a real paper session (supervisor, simulator, every actor) running the
inventory-skewed market maker plug-in, then the backtest's fill model over its
recording reproduces the session's fills and PnL within the stated tolerance
(backtest/consistency.py); and `backtest` runs on the session's recording."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from backtest.consistency import Tolerance, compare
from shared.recording import read_recording
from tests.helpers import wait_for


def test_backtest_fill_model_reproduces_a_paper_session(make_pipeline, tmp_path) -> None:
    p = make_pipeline({
        "strategy": {"plugin": "inventory_mm", "throttle_ms": 100, "half_spread_bps": 5,
                     "requote_bps": 30},
        "risk": {"cooldown_s": 1.0, "max_open_orders_per_symbol": 2},
    })
    p.start()

    def fills() -> int:
        return sum(1 for _ in read_recording(tmp_path / "recordings", ("fill.",)))

    wait_for(lambda: fills() >= 6 or None, timeout=90, interval=2.0,
             what="six fills of the market maker")
    time.sleep(2.0)
    p.stop()
    c = compare(tmp_path / "recordings", Decimal("0.0005"), Decimal("0.001"), Tolerance())
    assert c.live_fills >= 6 and c.orders >= 3, c
    assert c.ok, c.mismatches
    assert c.backtest_fills == c.live_fills
    # a tolerance that could not fail would prove nothing: a different fee schedule does
    worse = compare(tmp_path / "recordings", Decimal("0.01"), Decimal("0.01"), Tolerance())
    assert not worse.ok and any("fees" in m for m in worse.mismatches)

    r = p.cli("backtest", str(tmp_path / "recordings"), "--json", "--strategy",
              "inventory_mm", "--set", "risk.max_open_orders_per_symbol=2", timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["books"] > 0
