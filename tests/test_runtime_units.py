"""Pure pieces of the runtime: FSM table, restart policy, config."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.supervisor.policy import RestartTracker
from shared.config import ActorSettings, ConfigError, SupervisorConfig, load_config
from shared.fsm import TRANSITIONS, IllegalTransition, State, StateMachine


@given(st.lists(st.sampled_from(list(State)), max_size=30))
def test_fsm_follows_the_table_exactly(path: list[State]) -> None:
    seen: list[tuple[str, str]] = []
    fsm = StateMachine("t", listener=lambda a, old, new, trig: seen.append((old, new)))
    for target in path:
        before = fsm.state
        if target == before:
            fsm.to(target, "noop")
            continue
        if target in TRANSITIONS[before]:
            fsm.to(target, "ok")
            assert fsm.state == target
            assert seen[-1] == (before, target)
        else:
            with pytest.raises(IllegalTransition):
                fsm.to(target, "bad")
            assert fsm.state == before


def test_fatal_only_leads_to_stopping() -> None:
    assert TRANSITIONS[State.ERROR_FATAL] == {State.STOPPING}
    assert TRANSITIONS[State.STOPPING] == frozenset()


def limits(**kw) -> SupervisorConfig:
    return SupervisorConfig(**{"backoff_initial_s": 0.1, "backoff_max_s": 1.0,
                               "intensity_max_restarts": 3, "intensity_window_s": 10.0,
                               "stable_after_s": 5.0, **kw})


def test_backoff_doubles_and_caps_and_resets_after_stable_run() -> None:
    t = RestartTracker(ActorSettings(), limits())
    delays = []
    for _ in range(6):
        t.record_exit(uptime_s=0.1, now=0.0)
        delays.append(t.backoff_s())
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    t.record_exit(uptime_s=60.0, now=0.0)
    assert t.backoff_s() == 0.1


def test_intensity_window() -> None:
    t = RestartTracker(ActorSettings(), limits())
    for now in (0.0, 1.0, 2.0):
        assert not t.over_intensity(now)
        t.note_restart(now)
    assert t.over_intensity(3.0)
    assert not t.over_intensity(10.5)  # the first restart left the window


@pytest.mark.parametrize(("policy", "rc", "expected"), [
    ("always", 0, True), ("always", 1, True), ("on-failure", 0, False),
    ("on-failure", 1, True), ("on-failure", None, True), ("never", 1, False),
])
def test_restart_policy(policy: str, rc: int | None, expected: bool) -> None:
    t = RestartTracker(ActorSettings(restart=policy), limits())  # type: ignore[arg-type]
    assert t.should_restart(rc, stopping=False) is expected
    assert t.should_restart(rc, stopping=True) is False


def test_env_overrides_gates_and_secrets_only(tmp_path: Path, monkeypatch) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text("[gates]\nkill_switch = false\n")
    monkeypatch.setenv("BTCBOT_KILL_SWITCH", "true")
    monkeypatch.setenv("BTCTURK_API_SECRET", "s3cr3t-value")
    cfg = load_config(cfg_path)
    assert cfg.gates.kill_switch is True
    assert cfg.exchange.api_secret == "s3cr3t-value"
    monkeypatch.setenv("BTCBOT_KILL_SWITCH", "maybe")
    with pytest.raises(ConfigError, match="BTCBOT_KILL_SWITCH"):
        load_config(cfg_path)


def test_secret_file_must_be_0600(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("abc\n")
    secret.chmod(0o644)
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[exchange]\napi_secret_file = "secret"\n')
    with pytest.raises(ConfigError, match="0600"):
        load_config(cfg_path)
    secret.chmod(0o600)
    assert load_config(cfg_path).exchange.api_secret == "abc"


def test_fresh_config_cannot_trade_live(tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text("")
    cfg = load_config(cfg_path, mode="live")
    problems = cfg.live_arming_problems()
    assert len(problems) == 3


def test_committed_config_loads_in_paper_mode() -> None:
    cfg = load_config(Path(__file__).resolve().parent.parent / "supervisor.toml")
    assert cfg.mode == "paper"
    assert cfg.enabled_actors()[0] == "bus"
    assert "exchange-sim" in cfg.enabled_actors()
