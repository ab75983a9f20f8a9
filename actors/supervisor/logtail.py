"""Tailing actor log files: ``logs ACTOR [-f] [-n N]``, ``logs --all -f``, and the
prefixed coloured lines of a foreground ``start``. Follows rotation (a new file
under the same name) and truncation."""

from __future__ import annotations

import json
import os
import re
from collections import deque
from datetime import datetime
from pathlib import Path

import click

from shared.actorspec import ACTOR_NAMES
from shared.actorspec import spec as actor_spec
from shared.config import Config

COLOURS = ["cyan", "green", "yellow", "magenta", "blue", "bright_cyan", "bright_green",
           "bright_magenta", "bright_yellow"]


def last_lines(path: Path, n: int) -> list[str]:
    if n <= 0 or not path.exists():
        return []
    with open(path, "rb") as fh:
        tail: deque[bytes] = deque(fh, maxlen=n)
    return [line.decode("utf-8", "replace").rstrip("\n") for line in tail]


class Follower:
    """Yields the lines appended to one file since it was opened (or since start)."""

    def __init__(self, path: Path, *, from_end: bool = True) -> None:
        self.path = path
        self._fh = None
        self._inode = None
        self._partial = b""
        self._open(from_end)

    def _open(self, from_end: bool) -> None:
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            self._fh, self._inode = None, None
            return
        if from_end:
            fh.seek(0, os.SEEK_END)
        self._fh, self._inode = fh, os.fstat(fh.fileno()).st_ino

    def poll(self) -> list[str]:
        if self._fh is None:
            self._open(from_end=False)
            if self._fh is None:
                return []
        lines = self._read()
        if self._rotated():
            self._fh.close()
            self._open(from_end=False)
            lines += self._read() if self._fh else []
        return lines

    def _read(self) -> list[str]:
        assert self._fh is not None
        data = self._partial + self._fh.read()
        *complete, self._partial = data.split(b"\n")
        return [c.decode("utf-8", "replace") for c in complete]

    def _rotated(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        assert self._fh is not None
        return st.st_ino != self._inode or st.st_size < self._fh.tell()


def format_line(name: str, line: str, width: int, colour_index: int) -> str:
    tag = click.style(f"{name:<{width}} |", fg=COLOURS[colour_index % len(COLOURS)])
    return f"{tag} {line}"


# --- many logs as one ------------------------------------------------------------------

_LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)")


def line_time(line: str) -> float | None:
    """The epoch time a log line carries (loguru's text or JSON format), or None (a
    traceback line, the simulator's own output)."""
    if line.startswith("{"):
        try:
            return float(json.loads(line)["record"]["time"]["timestamp"])
        except (ValueError, KeyError, TypeError):
            return None
    m = _LOG_TIME.match(line)
    if m is None:
        return None
    # loguru writes local time without a zone; read it back the same way
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def log_paths(cfg: Config) -> dict[str, Path]:
    """Every log a pipeline writes, by name: the supervisor's and each child's (the
    simulator's is its .out), whether or not it exists yet."""
    paths = {"supervisor": cfg.log_path / "supervisor.log"}
    paths.update({n: cfg.log_path / actor_spec(n).log_name for n in ACTOR_NAMES})
    return paths


def interleave(batches: dict[str, list[str]], last: dict[str, float],
               arrived: float = 0.0) -> list[tuple[str, str]]:
    """(name, line) of every batch in time order. A line without a time of its own
    goes with the stamped line before it in the same log (``last`` carries that time
    from one call to the next, and is updated), or at ``arrived`` (when a follower
    read it) if that is later: the simulator's own output carries no time at all. The
    sort is stable, so one log's lines never change order."""
    stamped: list[tuple[float, str, str]] = []
    for name, lines in batches.items():
        t = max(last.get(name, 0.0), arrived)
        for line in lines:
            t = line_time(line) or t
            stamped.append((t, name, line))
        last[name] = t
    stamped.sort(key=lambda x: x[0])
    return [(name, line) for _, name, line in stamped]
