"""Tailing actor log files: ``logs ACTOR [-f] [-n N]``, ``logs --all -f``, and the
prefixed coloured lines of a foreground ``start``. Follows rotation (a new file
under the same name) and truncation."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import click

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
