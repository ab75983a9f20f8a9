"""Progress bars (issue 18, section 6): every long operation (replay, replay --verify,
backtest and its sweeps, incident bundle, why) draws one on a terminal, and stays quiet
with --json, under CI, and when stderr is piped. The terminal is a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from backtest.data import market_span_s, write_synthetic
from shared.progress import progress_wanted, reached
from tests.helpers import REPO
from tests.test_replay import MS, make_recording


class _Steps:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def update(self, n_steps: int) -> None:
        self.steps.append(n_steps)


def test_reached_moves_the_bar_forward_only() -> None:
    bar = _Steps()
    to = reached(bar)
    for done in (0, 5, 5, 3, 12):
        to(done)
    assert bar.steps == [5, 7]


def test_progress_is_wanted_only_on_a_terminal_outside_ci(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert progress_wanted() and not progress_wanted(as_json=True)
    monkeypatch.setenv("CI", "true")
    assert not progress_wanted()
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not progress_wanted()


def on_terminal(args: list[str], cwd: Path, *, ci: bool = False,
                timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; (exit code, output)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "actors.supervisor", *args], cwd=cwd,
                            env={**env, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                raise AssertionError(f"no output for {timeout}s: {out[-500:]!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        rc = proc.wait(timeout)
    return rc, out.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("market"), symbols=["BTCTRY", "ETHTRY"],
                           seconds=600, seed=5)


def test_market_span_is_the_recorded_time(market: Path, tmp_path: Path) -> None:
    assert 595 <= market_span_s([market]) <= 600
    assert market_span_s([tmp_path / "missing"]) == 0  # the run says what is wrong


def test_backtest_draws_a_bar_on_a_terminal_only(market: Path, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("")  # the defaults
    cfg = ["--config", str(tmp_path / "c.toml")]
    rc, out = on_terminal([*cfg, "backtest", str(market)], tmp_path)
    assert rc == 0, out
    assert "backtest (recorded seconds)" in out and "100%" in out, out
    rc, out = on_terminal([*cfg, "backtest", str(market), "--json"], tmp_path)
    assert rc == 0 and "recorded seconds" not in out and "%" not in out.split("{")[0]
    rc, out = on_terminal([*cfg, "backtest", str(market)], tmp_path, ci=True)
    assert rc == 0 and "recorded seconds" not in out
    piped = subprocess.run([sys.executable, "-m", "actors.supervisor", *cfg, "backtest",
                            str(market)], cwd=tmp_path, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "CI"},
                           timeout=120)
    assert piped.returncode == 0 and "recorded seconds" not in piped.stderr


def test_a_sweep_counts_its_points(market: Path, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("")
    rc, out = on_terminal(["--config", str(tmp_path / "c.toml"), "backtest", str(market),
                           "--sweep", "min_profit_bps=10,20", "--workers", "1"], tmp_path)
    assert rc == 0, out
    assert "backtest sweep" in out and "100%" in out, out


def test_replay_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    rec = make_recording(tmp_path / "rec", n=2500, step_ns=MS)
    rc, out = on_terminal(["--config", str(tmp_path / "none.toml"), "replay", str(rec),
                           "--max"], tmp_path)
    assert rc == 0, out
    assert "replay" in out and "100%" in out and "replayed 2550 records" in out, out
