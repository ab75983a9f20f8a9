"""Who may look and who may act: the dashboard's access token and the one-time
confirm tokens that stand between a button and an operator command.

The access token is created at first start in a 0600 file under data/; a token file
anyone else could read is treated as leaked and replaced. A confirm token is issued
for one command, is single-use and expires, so a command needs two deliberate steps
(the confirm dialog) and a replayed or forged request without a fresh token does
nothing.
"""

from __future__ import annotations

import hmac
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from shared.files import write_private_file

CONFIRM_TTL_S = 120.0
MAX_PENDING_CONFIRMS = 64

# Operator commands the dashboard can send: name → (supervisor command, value, what it does)
COMMANDS: dict[str, tuple[str, bool, str]] = {
    "pause": ("pause", True, "Pause trading: risk approves nothing until resumed."),
    "resume": ("resume", False, "Resume trading after a pause."),
    "kill_switch_on": ("kill_switch", True, "Turn the kill switch ON: no new orders."),
    "kill_switch_off": ("kill_switch", False, "Turn the kill switch off: orders allowed again."),
    "latch_clear": ("latch_clear", False, "Clear the reconciler's safety latch."),
}


def load_or_create_token(path: Path) -> str:
    """The access token in ``path`` (0600), created when missing or replaced when its
    mode lets anyone but the owner read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
        if mode & (stat.S_IRWXG | stat.S_IRWXO) == 0 and len(token) >= 32:
            return token
        logger.warning("dashboard: {} is readable by others (mode {:o}) or malformed: "
                       "replacing the token", path, mode & 0o777)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    write_private_file(path, (token + "\n").encode())
    logger.info("dashboard: created a new access token in {}", path)
    return token


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class ConfirmTokens:
    """One-time tokens, each bound to one command."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pending: dict[str, tuple[str, float]] = {}

    def issue(self, command: str) -> str:
        if command not in COMMANDS:
            raise KeyError(command)
        self._expire()
        while len(self._pending) >= MAX_PENDING_CONFIRMS:
            self._pending.pop(next(iter(self._pending)))
        token = secrets.token_urlsafe(16)
        self._pending[token] = (command, self.clock() + CONFIRM_TTL_S)
        return token

    def redeem(self, token: str, command: str) -> str | None:
        """None when valid (and now used up), else why not."""
        self._expire()
        if not token:
            return "no confirm token: ask for one (the confirm dialog) first"
        entry = self._pending.pop(token, None)
        if entry is None:
            return "unknown, used or expired confirm token"
        if entry[0] != command:
            return f"this confirm token was issued for {entry[0]}, not {command}"
        return None

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, (_, exp) in self._pending.items() if exp < now]:
            del self._pending[token]
