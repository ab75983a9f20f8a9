"""A persisted boot counter: a number that grows on every start of its owner, so that
ids built from it never repeat across restarts (even after SIGKILL or power loss: the
new value is on disk before it is used).
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.files import write_private_file


class BootCounterError(Exception):
    pass


def next_boot(path: str | os.PathLike[str]) -> int:
    """Read the last boot number at ``path`` (none: 0), store that + 1 durably (write a
    temporary file, fsync, rename over, fsync the directory) and return it. A file that
    is not a number is an error, never silently reset: a reset could reuse ids."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        text = p.read_text().strip()
    except FileNotFoundError:
        text = "0"
    except OSError as exc:
        raise BootCounterError(f"boot counter {p}: {exc.strerror or exc}") from None
    if not text.isdigit():
        raise BootCounterError(f"boot counter {p}: not a number ({text[:20]!r}); "
                               f"restore it or set it above every boot used so far")
    boot = int(text) + 1
    try:
        write_private_file(p, f"{boot}\n".encode())
    except OSError as exc:
        raise BootCounterError(f"boot counter {p}: {exc.strerror or exc}") from None
    return boot
