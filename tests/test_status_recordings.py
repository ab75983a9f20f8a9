"""The recorder's health and disk figures in ``status``: the recordings section and the
trading state's reason when the recorder is NOT RECORDING (pure: fake supervisor)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from actors.supervisor.status import derive_trading_state, recordings_status
from bus.messages import RecorderInfo
from shared.actorspec import SPECS
from shared.config import Config


def _sup(counters: dict[str, int], info: dict[str, Any], log_sink: str = "") -> Any:
    heard = SimpleNamespace(counters=counters, info=RecorderInfo(segment="", **info), ready=True,
                            state="READY", log_sink=log_sink)
    spec = next(s for s in SPECS if s.name == "recorder")
    rec = SimpleNamespace(name="recorder", running=True, heard=heard, spec=spec,
                          display_state=lambda: heard.state)
    return SimpleNamespace(cfg=Config(mode="paper"), children={"recorder": rec}, feed={})


GATES = {"kill_switch": False, "safe_mode": False, "live_armed": False, "stale_symbols": [],
         "live_problems": []}
LATCH = {"safety_latch": False, "paused": False}


def test_recording_and_disk_figures_are_shown() -> None:
    sup = _sup({"recording": 1, "recordings_bytes": 12_000_000, "recordings_segments": 3,
                "oldest_record_ns": 1_700_000_000_000_000_000, "disk_free_bytes": 10**9,
                "disk_low": 1},
               {"recording": True, "recording_reason": "", "disk_warning": "low disk: x"})
    doc = recordings_status(sup)
    assert doc is not None
    assert doc["recording"] and doc["bytes"] == 12_000_000 and doc["segments"] == 3
    assert doc["oldest_record"] == "2023-11-14T22:13:20Z"
    assert doc["disk_low"] and doc["warning"] == "low disk: x"
    # a recording recorder is no reason to halt (the executor is absent in this fake,
    # so latches are unknown and the state is HALTED for that reason alone)
    reasons = derive_trading_state(sup, GATES, LATCH)["reasons"]
    assert reasons and not any(r.startswith("recorder") for r in reasons)


def test_not_recording_is_never_trading_and_says_why() -> None:
    sup = _sup({"recording": 0}, {"recording": False,
                                  "recording_reason": "disk: ENOSPC (No space left)"})
    state = derive_trading_state(sup, GATES, LATCH)
    assert state["state"] == "HALTED"
    assert any(r.startswith("recorder:NOT RECORDING (disk: ENOSPC") for r in state["reasons"])
    doc = recordings_status(sup)
    assert doc is not None and not doc["recording"] and "ENOSPC" in doc["reason"]


def test_a_failing_log_sink_is_shown() -> None:
    from actors.supervisor.status import render_text

    sup = _sup({"recording": 1}, {"recording": True}, log_sink="failing: ENOSPC (full)")
    failing = {c.name: c.heard.log_sink for c in sup.children.values() if c.heard.log_sink}
    assert failing == {"recorder": "failing: ENOSPC (full)"}
    doc = {"mode": "paper", "exchange": {"kind": "sim", "url": ""},
           "trading": {"state": "TRADING", "reasons": []}, "actors": [],
           "gates": {"kill_switch": False, "safe_mode": False, "live_armed": False,
                     "stale_symbols": []},
           "latch": {"kill_switch": False, "safety_latch": False, "paused": False,
                     "reason": ""},
           "idempotency": {"pending": 0, "unknown": 0, "failed": 0},
           "recordings": recordings_status(sup), "log_sinks_failing": failing}
    text = render_text(doc)
    assert "WARNING: recorder's log file is not being written: failing: ENOSPC" in text
    assert "recordings: recording;" in text
