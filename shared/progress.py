"""Progress bars for long operator commands (replay, replay --verify, backtest and its
sweeps, incident bundle, why): drawn on stderr on an interactive terminal; silent with
``--json``, when stderr is not a terminal, or under CI (``CI`` set), so that piped and
machine-read output stays clean. In shared/ so that replay/ and backtest/, below the
supervisor, draw them the same way."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
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
    if not enabled or length <= 0:
        yield _Silent()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar


def reached(bar: Progress) -> Callable[[int], None]:
    """For a caller that reports how far it has got (``done`` of the bar's length)
    rather than steps: moves the bar forward to ``done``, never back."""
    at = 0

    def to(done: int) -> None:
        nonlocal at
        if done > at:
            bar.update(done - at)
            at = done

    return to
