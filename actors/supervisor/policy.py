"""Restart policy, pure: whether to restart a child, after how long, and when to
give up (OTP-style intensity limit). No I/O, so it is unit-tested directly."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from shared.config import ActorSettings, SupervisorConfig


@dataclass
class RestartTracker:
    spec: ActorSettings
    limits: SupervisorConfig
    consecutive_failures: int = 0
    recent: deque[float] = field(default_factory=deque)  # restart times (monotonic)
    gave_up: bool = False

    def should_restart(self, exit_code: int | None, *, stopping: bool) -> bool:
        """``exit_code`` None means we killed it (heartbeat/start timeout): a failure."""
        if stopping or self.gave_up:
            return False
        if self.spec.restart == "never":
            return False
        if self.spec.restart == "on-failure":
            return exit_code != 0
        return True

    def record_exit(self, uptime_s: float, now: float) -> None:
        """A run that lasted long enough resets the backoff."""
        if uptime_s >= self.limits.stable_after_s:
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        self._trim(now)

    def backoff_s(self) -> float:
        n = max(self.consecutive_failures - 1, 0)
        return min(self.limits.backoff_max_s, self.limits.backoff_initial_s * (2**n))

    def over_intensity(self, now: float) -> bool:
        """True when one more restart would exceed N restarts in T seconds."""
        self._trim(now)
        return len(self.recent) >= self.limits.intensity_max_restarts

    def note_restart(self, now: float) -> None:
        self.recent.append(now)

    def _trim(self, now: float) -> None:
        window = self.limits.intensity_window_s
        while self.recent and now - self.recent[0] > window:
            self.recent.popleft()
