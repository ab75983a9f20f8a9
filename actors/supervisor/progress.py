"""Progress bars for long operator commands: drawn on an interactive terminal, silent
with ``--json``, when stderr is not a terminal, or under CI (``CI`` set), so that piped
and machine-read output stays clean."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import click


class Progress(Protocol):
    def update(self, n_steps: int) -> None: ...


class _Silent:
    def update(self, n_steps: int) -> None:
        pass


def progress_wanted(as_json: bool = False) -> bool:
    return not as_json and not os.environ.get("CI") and sys.stderr.isatty()


@contextmanager
def progress(length: int, label: str, *, enabled: bool) -> Iterator[Progress]:
    """``with progress(n, "bundle", enabled=progress_wanted(as_json)) as bar: bar.update(1)``"""
    if not enabled:
        yield _Silent()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar
