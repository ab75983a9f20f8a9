"""Telling the open segment from closed ones: the writer's ``flock``.

The writer holds ``LOCK_EX`` on its open segment from before the header is written
until it closes it (writer.py). Anyone about to compress or delete a segment takes the
same lock without blocking: failing to get it means the segment is open (or another
party is already compressing or deleting it), and the segment is left alone.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """An fd holding ``LOCK_EX`` on ``path``, or None when the segment is open, being
    handled by someone else, or gone. The caller closes the fd to release it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    # Between our listing and the lock, another party may have finished compressing or
    # deleting it: the name must still be this very file.
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def is_open(path: Path) -> bool:
    """True while a writer holds the segment (a momentary lock probe)."""
    fd = try_lock(path)
    if fd is None:
        return path.exists()
    os.close(fd)
    return False
