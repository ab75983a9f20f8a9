"""Loguru setup shared by every process: one file per actor under logs/, with
rotation and retention, optional JSON lines, and secrets redacted."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from loguru import logger

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


def setup_logging(cfg: Config, actor: str, *, stderr: bool | None = None) -> Path:
    """Configure loguru for ``actor``; returns the log file path."""
    log_dir = cfg.log_path
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{actor}.log"
    logger.remove()
    logger.configure(patcher=_patch, extra={"actor": actor})
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | {extra[actor]} | {message}"
    logger.add(
        path, level=cfg.logging.level, format=fmt, serialize=cfg.logging.json,
        rotation=cfg.logging.rotation, retention=cfg.logging.retention, enqueue=False,
        backtrace=False, diagnose=False,
    )
    if stderr is None:
        stderr = os.environ.get("BTCBOT_LOG_STDERR") == "1"
    if stderr:
        logger.add(sys.stderr, level=cfg.logging.level, format="{level:<7} | {message}",
                   backtrace=False, diagnose=False)
    register_secret(cfg.exchange.api_secret)
    register_secret(cfg.exchange.api_key)
    return path
