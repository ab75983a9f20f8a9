"""Consistency: real paper sessions (supervisor, simulator, every actor), then

- order level: the backtest's fill model over the session's own orders reproduces the
  session's fills and PnL (backtest/consistency.py, ``compare``);
- strategy level: the backtest's strategy and risk, deciding for themselves on the
  session's market data with the session's timing (backtest/session.py), reproduce
  the session's intents, orders, fills, PnL and positions within the stated tolerance
  (``compare_session``, ``btcbot-supervisor backtest --consistency``); and the check
  fails when the backtest is not the session's: a doubled fee schedule, another
  strategy parameter;
- ``backtest`` runs on the session's recording.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest

from actors.strategy.loader import load_strategy
from backtest.consistency import Tolerance, compare, compare_session
from backtest.data import write_synthetic
from backtest.engine import Fees
from backtest.session import SessionError, read_session
from shared.config import load_config
from shared.recording import read_recording
from tests.helpers import Pipeline, wait_for

MAKER, TAKER = Fees().maker, Fees().taker  # the simulator's default schedule


def _record(make_pipeline, tmp_path: Path, overrides: dict, fills: int) -> Path:
    p = make_pipeline(overrides)
    p.start()

    def count() -> int:
        return sum(1 for _ in read_recording(tmp_path / "recordings", ("fill.",)))

    wait_for(lambda: count() >= fills or None, timeout=90, interval=2.0,
             what=f"{fills} fills")
    time.sleep(2.0)
    p.stop()
    return tmp_path / "recordings"


def _fields(out: dict) -> dict[str, dict]:
    return {f["name"]: f for f in out["fields"]}


def test_backtest_reproduces_a_market_making_paper_session(make_pipeline, tmp_path) -> None:
    rec = _record(make_pipeline, tmp_path, {
        "strategy": {"plugin": "inventory_mm", "throttle_ms": 100, "half_spread_bps": 5,
                     "requote_bps": 30},
        "risk": {"cooldown_s": 1.0, "max_open_orders_per_symbol": 2},
    }, fills=6)

    # Order level: the fill model alone.
    c = compare(rec, MAKER, TAKER, Tolerance())
    assert c.live_fills >= 6 and c.orders >= 3, c
    assert c.ok, c.mismatches
    assert c.backtest_fills == c.live_fills
    # a tolerance that could not fail would prove nothing: a different fee schedule does
    worse = compare(rec, Decimal("0.01"), Decimal("0.01"), Tolerance())
    assert not worse.ok and any("fees" in m for m in worse.mismatches)

    # Strategy level, in process: the strategy decided what the session's did.
    cfg = load_config(tmp_path / "supervisor.toml")
    session = read_session(rec)
    s = compare_session(rec, cfg, load_strategy(cfg.strategy), Fees(MAKER, TAKER),
                        session=session)
    assert s.ok, s.render()
    fields = {f.name: f for f in s.fields}
    assert int(fields["fills"].live) >= 6
    assert int(fields["intents"].live) >= 6 and fields["orders"].live != "0"

    # The command: pass, then two backtests that are not the session's fail.
    cli = Pipeline(tmp_path / "supervisor.toml").cli
    ok = cli("backtest", "--consistency", str(rec), "--json", timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = json.loads(ok.stdout)
    assert out["ok"] and out["fill_model"]["ok"], out
    assert all(f["ok"] for f in out["fields"])

    doubled = cli("backtest", "--consistency", str(rec), "--json",
                  "--maker-fee-bps", "10", "--taker-fee-bps", "20", timeout=120)
    assert doubled.returncode == 1, doubled.stdout + doubled.stderr
    bad = _fields(json.loads(doubled.stdout))
    assert not bad["fees"]["ok"], bad
    assert Decimal(bad["fees"]["backtest"]) > Decimal(bad["fees"]["live"]) * Decimal("1.9")

    wider = cli("backtest", "--consistency", str(rec), "--json",
                "--set", "half_spread_bps=15", timeout=120)
    assert wider.returncode == 1, wider.stdout + wider.stderr
    failed = {name for name, f in _fields(json.loads(wider.stdout)).items() if not f["ok"]}
    assert failed & {"intents", "orders", "orders with other fills"}, failed

    text = cli("backtest", "--consistency", str(rec), timeout=120)
    assert text.returncode == 0 and "consistency: PASS" in text.stdout, text.stdout

    plain = cli("backtest", str(rec), "--json", "--strategy", "inventory_mm", "--set",
                "risk.max_open_orders_per_symbol=2", timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["books"] > 0


def test_backtest_reproduces_a_taker_paper_session(make_pipeline, tmp_path) -> None:
    """The default strategy buys at the ask and sells at the bid: taker fills, matched
    where the exchange answered, and the minimum-total rejections of risk."""
    rec = _record(make_pipeline, tmp_path, {"strategy": {"throttle_ms": 100},
                                            "risk": {"cooldown_s": 1.0}}, fills=4)
    cfg = load_config(tmp_path / "supervisor.toml")
    s = compare_session(rec, cfg, load_strategy(cfg.strategy), Fees(MAKER, TAKER))
    assert s.ok, s.render()
    fields = {f.name: f for f in s.fields}
    assert int(fields["fills"].live) >= 4, s.render()
    # another entry size is another strategy: the same books, other orders
    other = compare_session(rec, cfg, load_strategy(cfg.strategy,
                                                    {"entry_notional_try": "400"}),
                            Fees(MAKER, TAKER))
    assert not other.ok, other.render()


def test_a_market_only_recording_cannot_be_checked(tmp_path) -> None:
    """No strategy ran in it: SessionError says why (the command exits 2 with it)."""
    write_synthetic(tmp_path / "rec", symbols=["BTCTRY"], seconds=5)
    with pytest.raises(SessionError, match="joined_hb_seq"):
        read_session(tmp_path / "rec")
