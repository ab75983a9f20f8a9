"""``status --watch``: the status redrawn in place every interval, like ``top``.

On a terminal each snapshot replaces the last (ANSI cursor home + clear screen); piped
or redirected, snapshots follow each other separated by a blank line, so a log of them
stays readable. Ctrl-C ends it (exit 0: the operator asked). A supervisor that stops
answering is shown as such and watched for until it answers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

CLEAR_HOME = "\x1b[H\x1b[2J"  # cursor to the top-left, then erase the screen


def frame(text: str, *, tty: bool, first: bool) -> str:
    """What to write for one snapshot."""
    if tty:
        return CLEAR_HOME + text + "\n"
    return ("" if first else "\n") + text + "\n"


def watch(fetch: Callable[[], dict[str, Any] | None], render: Callable[[dict[str, Any]], str],
          out: TextIO, *, interval_s: float, tty: bool, not_running: str = "not running",
          sleep: Callable[[float], None] = time.sleep, count: int | None = None) -> int:
    """Fetch, render, write, wait; ``count`` snapshots (None: until Ctrl-C). Exit code."""
    shown = 0
    try:
        while count is None or shown < count:
            started = time.monotonic()
            doc = fetch()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            body = render(doc) if doc is not None else f"{not_running} (watching)"
            header = f"btcbot status at {stamp} UTC, every {interval_s:g}s (Ctrl-C quits)"
            out.write(frame(f"{header}\n{body}", tty=tty, first=shown == 0))
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                break
            sleep(max(0.0, interval_s - (time.monotonic() - started)))
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
            out.flush()
    except BrokenPipeError:  # `status --watch | head`: the reader has seen enough
        pass
    return 0
