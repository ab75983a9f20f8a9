"""Loguru setup shared by every process: one file per actor under logs/, with
rotation and retention, optional JSON lines, and secrets redacted.

A failing log file (a full or broken logs disk) must not stop an actor, and must not
go unnoticed either: the file sink is loguru's own (rotation, retention) behind a thin
guard that swallows the OSError, counts it and remembers why (``LOG_HEALTH``); every
actor's heartbeat carries that, so ``status`` shows the log sink failing.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

from loguru import logger
from loguru._file_sink import FileSink  # loguru's rotating file sink, wrapped below

from shared.config import Config

# Anything that looks like a credential in a log line is masked, whatever logged it.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(api[_-]?secret|secret|signature|x-signature|password|token)"
               r"(['\"]?\s*[:=]\s*['\"]?)([^\s'\",}]+)"),
]
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Mask this exact value in every later log record."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact_text(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1\2***", text)
    return text


def _patch(record: dict) -> None:  # type: ignore[type-arg]
    record["message"] = redact_text(record["message"])


class LogHealth:
    """Whether this process's log file takes writes (read by the heartbeat)."""

    def __init__(self) -> None:
        self.errors = 0
        self.failing = ""  # why the last write failed; "" once a write succeeds again
        # Why it had been failing, set by the first line written again (whichever line
        # that is) and cleared once the actor has said so in its log (actors/runtime.py).
        self.recovered = ""

    def describe(self) -> str:
        return f"failing: {self.failing}" if self.failing else ""


LOG_HEALTH = LogHealth()


class GuardedFileSink:
    """loguru's FileSink, minus the crash: a write error is counted, not raised (loguru
    would print it to a stderr nobody reads, once per line)."""

    def __init__(self, path: Path, *, rotation: str, retention: int,
                 health: LogHealth = LOG_HEALTH) -> None:
        self._inner = FileSink(str(path), rotation=rotation, retention=retention)
        self._health = health

    def write(self, message: str) -> None:
        try:
            self._inner.write(message)
        except OSError as exc:
            self._health.errors += 1
            code = errno.errorcode.get(exc.errno or 0, "error")
            self._health.failing = f"{code} ({exc.strerror or exc})"
        else:
            if self._health.failing:
                self._health.recovered = self._health.failing
                self._health.failing = ""

    def stop(self) -> None:
        try:
            self._inner.stop()
        except OSError:
            pass


def setup_logging(cfg: Config, actor: str, *, stderr: bool | None = None) -> Path:
    """Configure loguru for ``actor``; returns the log file path."""
    log_dir = cfg.log_path
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{actor}.log"
    logger.remove()
    logger.configure(patcher=_patch, extra={"actor": actor})
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | {extra[actor]} | {message}"
    logger.add(
        GuardedFileSink(path, rotation=cfg.logging.rotation, retention=cfg.logging.retention),
        level=cfg.logging.level, format=fmt, serialize=cfg.logging.json, enqueue=False,
        backtrace=False, diagnose=False, colorize=False,
    )
    if stderr is None:
        stderr = os.environ.get("BTCBOT_LOG_STDERR") == "1"
    if stderr:
        logger.add(sys.stderr, level=cfg.logging.level, format="{level:<7} | {message}",
                   backtrace=False, diagnose=False)
    register_secret(cfg.exchange.api_secret)
    register_secret(cfg.exchange.api_key)
    return path
