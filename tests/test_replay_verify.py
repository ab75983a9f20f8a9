"""`replay --verify` against real recorded sessions.

A default-config paper session (simulator, every actor) is recorded and verified at
--max and at the recorded speed: every intent and every decision must come out the same
(replay/verify.py says why it is exact). A changed risk limit or strategy parameter
must fail (exit 1) naming the decision or intent, the field and both values. A dry-run
session with synthetic market data checks that a recording whose early segments are
compressed and the last not reads and verifies the same."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from bus.messages import (
    Balance,
    BookSnapshot,
    FeedStatus,
    KeyCounts,
    Latches,
    PortfolioSnapshot,
    SymbolRules,
)
from replay.feed import BusClient
from replay.pipeline import IsolatedPipeline
from replay.verify import recorded_decisions, recorded_intents
from shared.config import load_config
from tests.helpers import Pipeline, free_port, kill_all, wait_for, write_config

STRATEGY_SRC = Path(__file__).resolve().parent.parent / "actors" / "strategy" / "actor.py"

BASE = """
mode = "dry-run"
[marketdata]
symbols = ["BTCTRY"]
# The replay runs later than the recording; books are judged by their recorded receive
# time, so their age must not make risk reject them during this test.
max_data_age_s = 3600.0
[strategy]
trade_every_tick = true
entry_notional_try = "{notional}"
# Funds come from the fed `portfolio`: the recorded session runs a dry-run executor,
# which has no balances (a paper/live executor's own portfolio would carry them). They
# are recorded and replayed like any portfolio, and the replay's mirror executor answers
# snapshot queries from them. No periodic snapshot is taken during the short session.
snapshot_interval_s = 3600.0
[risk]
snapshot_interval_s = 3600.0
executor_state_max_age_s = 7200.0
"""


def _strategy_has_logic() -> bool:
    return "def on_message" in STRATEGY_SRC.read_text()


pytestmark = pytest.mark.skipif(not _strategy_has_logic(),
                                reason="actors/strategy has no logic yet (no on_message)")


def _write(path: Path, notional: str) -> Path:
    path.write_text(BASE.format(notional=notional))
    return path


def _feed_session(client: BusClient, seconds: float) -> None:
    rules = SymbolRules(symbol="BTCTRY", base="BTC", quote="TRY", price_scale=0, qty_scale=8,
                        tick_size=Decimal(1), min_price=Decimal(1), max_price=Decimal(10**9),
                        min_total=Decimal(10))
    pub = client.pub
    funds = PortfolioSnapshot(positions=[], open_orders=[], latches=Latches(), keys=KeyCounts(),
                              balances=[Balance(asset="TRY", free=Decimal(100_000),
                                                locked=Decimal(0))])
    pub.publish(rules)
    pub.publish(FeedStatus(symbol="BTCTRY", fresh=True, source="ws", age_ms=0))
    pub.publish(funds)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        now, mono = time.time_ns(), time.monotonic_ns()
        bid = Decimal(2_500_000 + (i % 7) * 10)
        pub.publish(BookSnapshot(symbol="BTCTRY", bids=[(bid, Decimal("0.5"))],
                                 asks=[(bid + 100, Decimal("0.5"))], source="ws",
                                 exchange_ts_ms=now // 1_000_000, recv_wall_ns=now,
                                 recv_mono_ns=mono, age_ms=0, change_set=i))
        if i % 4 == 0:
            pub.publish(rules)
            pub.publish(FeedStatus(symbol="BTCTRY", fresh=True, source="ws", age_ms=0))
            pub.publish(funds)
        time.sleep(0.25)  # every reaction (intent, decision, order) settles in between


def _replay(config: Path, rec: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors.supervisor", "--config", str(config), "replay",
         str(rec), "--verify", "--settle", "2"],
        capture_output=True, text=True, timeout=180, cwd=config.parent)


def _default_paper_config(tmp: Path) -> dict:
    """The shipped defaults (paper mode, every strategy and risk parameter as shipped),
    only with private paths and free ports; the dashboard (an observer) is off."""
    return {"runtime_dir": str(tmp / "run"), "log_dir": str(tmp / "logs"),
            "data_dir": str(tmp / "data"),
            "simulator": {"port": free_port()},
            "dashboard": {"port": free_port()},
            "actors": {"dashboard": {"enabled": False}},
            "executor": {"db_path": str(tmp / "data" / "btcbot.db")},
            "recorder": {"path": str(tmp / "recordings")}}


def _verify(config: Path, rec: Path, *speed: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors.supervisor", "--config", str(config), "replay",
         str(rec), "--verify", *speed],
        capture_output=True, text=True, timeout=240, cwd=config.parent)


@pytest.fixture(scope="module")
def paper_session(tmp_path_factory) -> tuple[Path, Path]:
    """A default-config paper session, with an operator's pause and resume, recorded
    until risk has decided at least three intents, one of them approved (about 20-30 s)."""
    tmp = tmp_path_factory.mktemp("paper")
    doc = _default_paper_config(tmp)
    config = write_config(tmp, doc)
    p = Pipeline(config)
    try:
        p.start()
        risk = lambda: next(a for a in p.status()["actors"] if a["name"] == "risk")  # noqa: E731
        # An operator pause and resume: the executor persists the latch and announces it
        # on portfolio at once, an input like any other.
        wait_for(lambda: risk()["counters"].get("approved", 0) + risk()["counters"].get(
            "rejected", 0) >= 1, timeout=120, interval=1.0, what="a first decision")
        assert p.cli("pause").returncode == 0
        time.sleep(2.0)
        assert p.cli("resume").returncode == 0
        wait_for(lambda: (c := risk()["counters"]).get("approved", 0) >= 1
                 and c.get("approved", 0) + c.get("rejected", 0) >= 3,
                 timeout=120, interval=1.0, what="three decisions, one approved")
        time.sleep(2.0)  # the executor's reactions to the last one are recorded too
    finally:
        p.stop()
        kill_all(config, doc["simulator"]["port"])
    return config, tmp / "recordings"


def test_verify_of_a_default_paper_session_passes_at_max_speed(paper_session) -> None:
    config, rec = paper_session
    decisions = recorded_decisions(rec, None, None)
    assert len(decisions) >= 3
    t0 = time.monotonic()
    ok = _verify(config, rec, "--max")
    print(f"verify --max of the recorded session: {time.monotonic() - t0:.1f}s")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(decisions)} recorded decisions, {len(decisions)} replayed" in ok.stdout
    assert "0 differences -> OK" in ok.stdout


def test_verify_of_a_default_paper_session_passes_at_the_recorded_speed(
        paper_session) -> None:
    config, rec = paper_session
    ok = _verify(config, rec)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 differences -> OK" in ok.stdout


def test_a_changed_config_shows_which_decision_which_field_old_and_new(
        paper_session, tmp_path: Path) -> None:
    """A risk limit changed: risk decides differently on the recorded intents, and the
    diff names the decision, the field and both values. A strategy parameter changed:
    the intents differ, named the same way."""
    config, rec = paper_session
    doc = tomllib.loads(config.read_text())
    decisions = recorded_decisions(rec, None, None)
    approved = [d for d in decisions if d.verdict == "approved"]
    stricter = {**doc, "risk": {**doc.get("risk", {}), "min_order_notional_try": "1000"}}
    bad = _verify(write_config(tmp_path, stricter, "stricter.toml"), rec, "--max")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    first = approved[0]
    assert (f"differs: decision {first.intent_id} ({first.symbol}): verdict approved -> "
            "rejected") in bad.stdout, bad.stdout
    assert "note: config differs from the recording: risk.min_order_notional_try" in bad.stdout
    assert "FAILED" in bad.stdout

    bigger = {**doc, "strategy": {**doc.get("strategy", {}), "entry_notional_try": "150"}}
    bad = _verify(write_config(tmp_path, bigger, "bigger.toml"), rec, "--max")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    buys = [i for i in recorded_intents(rec, None, None) if i.reason == "conservative_entry"]
    assert buys, "the session made no entry"
    assert f"differs: intent {buys[0].intent_id} ({buys[0].symbol}): quantity " in bad.stdout


def test_verify_reads_a_session_whose_early_segments_are_compressed_and_the_last_not(
        tmp_path: Path) -> None:
    from shared.recording import segment_paths
    from shared.recording.reader import decompress_file

    cfg = tmp_path / "same.toml"
    cfg.write_text(BASE.format(notional="100") + "\n[recorder]\nsegment_max_s = 1.0\n")
    session = tmp_path / "session"
    with IsolatedPipeline(load_config(cfg), record=True, root=session) as p:
        client = BusClient(p.cfg)
        client.connect()
        _feed_session(client, 4.0)
        time.sleep(1.5)
        client.close()
        rec = p.recordings
    # The recorder compressed every closed segment (at rotation and at stop). Turn the
    # last one back into a plain segment, as a recording from before compression (or
    # one whose recorder was killed) has it.
    paths = segment_paths(rec)
    assert len(paths) >= 3 and all(x.name.endswith(".zst") for x in paths), paths
    last = paths[-1]
    data, problem = decompress_file(last)
    assert not problem
    last.with_name(last.name[:-len(".zst")]).write_bytes(data)
    last.unlink()
    forms = [x.name.endswith(".zst") for x in segment_paths(rec)]
    assert forms[:-1] == [True] * (len(forms) - 1) and forms[-1] is False
    decisions = recorded_decisions(rec, None, None)
    assert decisions
    ok = _replay(cfg, rec)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(decisions)} recorded decisions" in ok.stdout
    assert "0 differences -> OK" in ok.stdout


def test_a_risk_that_restored_todays_loss_is_verified_with_it(tmp_path: Path) -> None:
    """The bot restarted mid-day on the same data: risk restores today's daily-loss
    baseline from data/risk.day (here one that puts the day 1000 TRY down, beyond the
    500 TRY limit), which no recorded message carries. Verify seeds the replayed risk
    with the baseline the recorded one announced at its start, so its limit:daily_loss
    rejections replay as they were made."""
    from actors.risk import daybook
    from shared.tradingday import TradingDay

    doc = _default_paper_config(tmp_path)
    config = write_config(tmp_path, doc)
    td = TradingDay.named("Europe/Istanbul", 0)
    daybook.save(daybook.path_in(tmp_path / "data"), td,
                 daybook.DayBaseline(td.day(time.time_ns()), Decimal(1000), True))
    p = Pipeline(config)
    try:
        p.start()
        risk = lambda: next(a for a in p.status()["actors"] if a["name"] == "risk")  # noqa: E731
        wait_for(lambda: risk()["counters"].get("reason.limit:daily_loss", 0) >= 2,
                 timeout=120, interval=1.0, what="two daily-loss rejections")
    finally:
        p.stop()
        kill_all(config, doc["simulator"]["port"])
    decisions = recorded_decisions(tmp_path / "recordings", None, None)
    assert decisions and all("limit:daily_loss" in d.reasons for d in decisions)
    ok = _verify(config, tmp_path / "recordings", "--max")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 differences -> OK" in ok.stdout
