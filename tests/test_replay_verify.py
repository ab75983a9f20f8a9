"""`replay --verify` against a real recorded session: a dry-run pipeline (supervisor,
bus, executor, risk, strategy, recorder) is fed synthetic market data and recorded; the
recording is then replayed through a fresh isolated pipeline (its executor in mirror
mode). Unchanged parameters must verify (exit 0); a changed strategy parameter must fail
(exit 1) naming the decision. Determinism rests on the message clock (strategy and risk
decide by the envelope times, which replay preserves) and on the mirror executor adding
no order/fill/portfolio messages of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from actors.supervisor.replay import BusClient, IsolatedPipeline, recorded_decisions
from bus.messages import (
    Balance,
    BookSnapshot,
    FeedStatus,
    KeyCounts,
    Latches,
    PortfolioSnapshot,
    SymbolRules,
)
from shared.config import load_config

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


def test_verify_passes_unchanged_and_fails_on_a_changed_strategy_parameter(
        tmp_path: Path) -> None:
    same = _write(tmp_path / "same.toml", "100")
    changed = _write(tmp_path / "changed.toml", "150")
    session = tmp_path / "session"
    with IsolatedPipeline(load_config(same), record=True, backend="auto", root=session) as p:
        client = BusClient(p.cfg)
        client.connect()
        _feed_session(client, 4.0)
        time.sleep(1.5)  # the last decisions are made and recorded
        client.close()
        rec = p.recordings
    decisions = recorded_decisions(rec, None, None)
    assert decisions, "the recorded session made no decision: nothing to verify"

    ok = _replay(same, rec)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(decisions)} recorded decisions" in ok.stdout
    assert "0 differences -> OK" in ok.stdout

    bad = _replay(changed, rec)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED" in bad.stdout
    assert f"decision {decisions[0].intent_id}" in bad.stdout
    assert "strategy.entry_notional_try: recorded '100', now '150'" in bad.stdout


def test_verify_reads_a_session_whose_early_segments_are_compressed_and_the_last_not(
        tmp_path: Path) -> None:
    from shared.recording import segment_paths
    from shared.recording.reader import decompress_file

    cfg = tmp_path / "same.toml"
    cfg.write_text(BASE.format(notional="100") + "\n[recorder]\nsegment_max_s = 1.0\n")
    session = tmp_path / "session"
    with IsolatedPipeline(load_config(cfg), record=True, backend="auto", root=session) as p:
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
