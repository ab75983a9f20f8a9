"""The gates of DESIGN section 3, as a pure function of (config, risk state, clock).

Each returns machine-readable reason codes; an empty list means the gate is open.
Unknown is closed: no executor snapshot yet means latches are unknown, and no
freshness information for a symbol means its data is stale.
"""

from __future__ import annotations

from shared.config import Config

from .state import RiskState

KNOWN_MODES = ("dry-run", "paper", "live")


def global_gates(cfg: Config, state: RiskState, now_ns: int) -> list[str]:
    """Gates that do not depend on the symbol."""
    reasons: list[str] = []
    if cfg.mode not in KNOWN_MODES:
        reasons.append("gate:mode")
    if cfg.mode == "live" and cfg.live_arming_problems():
        reasons.append("gate:live_not_armed")
    latches = state.latches
    if cfg.gates.kill_switch or state.control_kill or (latches is not None
                                                       and latches.kill_switch):
        reasons.append("gate:kill_switch")
    if cfg.gates.safe_mode:
        reasons.append("gate:safe_mode")
    if latches is None:
        reasons.append("gate:executor_state_unknown")
    else:
        max_age_ns = int(cfg.risk.executor_state_max_age_s * 1e9)
        if now_ns - state.snapshot_wall_ns > max_age_ns:
            reasons.append("gate:executor_state_stale")
        if latches.safety_latch:
            reasons.append("gate:safety_latch")
    if state.control_paused or (latches is not None and latches.paused):
        reasons.append("gate:paused")
    return reasons


def data_gate(cfg: Config, state: RiskState, symbol: str, now_ns: int) -> list[str]:
    """Market-data freshness: the last FeedStatus must say fresh AND the last book must
    be younger than max_data_age at ``now_ns``. Unknown = stale."""
    book = state.books.get(symbol)
    if not state.feed.get(symbol, False) or book is None:
        return ["market_data:stale"]
    age_ns = now_ns - book.recv_wall_ns
    if age_ns > int(cfg.marketdata.max_data_age_s * 1e9):
        return ["market_data:stale"]
    return []
