"""Secrets never reach a log file."""

from __future__ import annotations

from pathlib import Path

from loguru import logger

from shared.config import load_config
from shared.logging import redact_text, setup_logging


def test_configured_secret_is_redacted_in_the_log_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "c.toml").write_text(f'log_dir = "{tmp_path / "logs"}"\n')
    monkeypatch.setenv("BTCTURK_API_KEY", "public-key-123")
    monkeypatch.setenv("BTCTURK_API_SECRET", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    cfg = load_config(tmp_path / "c.toml")
    path = setup_logging(cfg, "test")
    logger.info("calling with secret c2VjcmV0LXNlY3JldC1zZWNyZXQ= and key public-key-123")
    logger.info("headers {}", {"X-Signature": "abcdefg=="})
    logger.remove()
    text = path.read_text()
    assert "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" not in text
    assert "public-key-123" not in text
    assert "abcdefg==" not in text
    assert text.count("***") >= 3


def test_redact_patterns() -> None:
    assert "hunter2" not in redact_text("password=hunter2 api_secret: 'xyz123'")
    assert "xyz123" not in redact_text("password=hunter2 api_secret: 'xyz123'")


def test_a_full_logs_disk_is_counted_and_reported_not_raised(tmp_path: Path) -> None:
    import subprocess

    import pytest

    from shared.logging import LOG_HEALTH

    mnt = tmp_path / "logs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        (tmp_path / "c.toml").write_text(f'log_dir = "{mnt}"\n')
        path = setup_logging(load_config(tmp_path / "c.toml"), "test")
        LOG_HEALTH.errors, LOG_HEALTH.failing, LOG_HEALTH.recovered = 0, "", ""
        for i in range(2000):
            logger.info("line {} {}", i, "x" * 100)  # never raises into the caller
        assert LOG_HEALTH.errors > 0 and "ENOSPC" in LOG_HEALTH.describe()
        with open(path, "r+b") as f:  # the operator makes room
            f.truncate(0)
        logger.info("room again")
        assert LOG_HEALTH.failing == "" and LOG_HEALTH.describe() == ""
        # the first line through (any line) leaves why, for the actor to write down
        assert LOG_HEALTH.recovered.startswith("ENOSPC"), LOG_HEALTH.recovered
        logger.remove()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
