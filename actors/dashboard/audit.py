"""The audit trail of operator commands sent from the dashboard: one JSON line per
attempt (refused ones too) in a 0600 file under data/, fsynced (commands are rare and
the record must survive a crash), and the same line in the actor's log.

The executor's DB has no audit table to write to today; when it offers one, this is
the place to also send it there."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from loguru import logger


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, **entry: Any) -> None:
        line = {"ts": time.time(), "source": "dashboard", **entry}
        logger.info("audit: {}", json.dumps(line, sort_keys=True))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
