"""Private directories and files: what btcbot writes is its owner's only.

data/, run/, logs/ and recordings/ are 0700 and the files in them 0600 (the process
umask is 0077 from the supervisor down). A directory that others may write to is
refused: anyone who can write there can replace a socket, a DB or a recording.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077  # new files 0600, new directories 0700


class UnsafeDirectory(Exception):
    """A directory btcbot would write to is writable by others (the message says which)."""


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700. Refuses a directory
    that is not ours to fix: one owned by another user."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = p.stat()
    if st.st_uid != os.getuid():
        raise UnsafeDirectory(f"{p}: owned by uid {st.st_uid}, not by us (uid {os.getuid()})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(p, 0o700)
    return p


def unsafe_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (an existing directory) is unsafe to write into, or None: writable
    by group or others without the sticky bit, or owned by someone else."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.getuid():
        return f"{p} is owned by uid {st.st_uid}, not by us"
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        return f"{p} is writable by {'others' if mode & stat.S_IWOTH else 'its group'} " \
               f"(mode {mode:o})"
    return None


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` atomically to a 0600 file (a crash leaves the old file or the new
    one, never half of one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
