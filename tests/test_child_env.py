"""Secrets only where needed (actors/supervisor/env.py): only the executor, only in live
mode, sees the exchange credentials; paper mode signs with the simulator's keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.supervisor.env import SECRET_VARS, child_environment
from shared.actorspec import SPECS, spec
from shared.config import load_config

ENV = {"BTCTURK_API_KEY": "live-key", "BTCTURK_API_SECRET": "live-secret",
       "BTCBOT_LIVE_TRADING": "1", "BTCBOT_LOG_STDERR": "1", "PATH": "/bin"}


@pytest.mark.parametrize("mode", ["dry-run", "paper", "live"])
def test_only_the_executor_in_live_mode_gets_credentials(mode: str) -> None:
    for s in SPECS:
        env = child_environment(ENV, s, mode)
        has = all(v in env for v in SECRET_VARS)
        assert has == (s.name == "executor" and mode == "live"), (s.name, mode)
        assert "BTCBOT_LOG_STDERR" not in env  # the supervisor's own
        assert env["BTCBOT_LIVE_TRADING"] == "1" and env["PATH"] == "/bin"  # gates stay
    assert spec("executor").secrets and not spec("risk").secrets


def test_paper_mode_signs_with_the_simulators_keys(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCTURK_API_KEY", "live-key")
    monkeypatch.setenv("BTCTURK_API_SECRET", "bGl2ZS1zZWNyZXQ=")
    path = tmp_path / "c.toml"
    path.write_text('mode = "paper"\n')
    cfg = load_config(path)
    assert cfg.credentials() == (cfg.simulator.api_key, cfg.simulator.api_secret)
    live = load_config(path, mode="live")
    assert live.credentials() == ("live-key", "bGl2ZS1zZWNyZXQ=")
