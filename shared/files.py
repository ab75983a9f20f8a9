"""Private directories and files: what btcbot writes is its owner's only.

data/, run/, logs/ and recordings/ are 0700 and the files in them 0600 (the process
umask is 0077 from the supervisor down). A directory that others may write to is
refused: anyone who can write there can replace a socket, a DB or a recording.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
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


@dataclass
class DirAudit:
    """What ``audit_private_dirs`` found: reasons to refuse, and what it fixed."""

    refused: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)


def audit_private_dirs(dirs: dict[str, Path], shallow: set[Path] | None = None) -> DirAudit:
    """Check btcbot's directories before a start (``dirs``: config field -> path; a
    missing one is fine, it is created 0700 under the umask).

    Refused (nothing changed): owned by another user, or writable by others or by the
    group; whoever can write there may already have replaced a DB, a socket or a
    recording, so a chmod would hide it rather than fix it. Fixed with a warning: a
    directory that group or others may read, and anything inside it they may read,
    loses its group and other bits (0755 -> 0700, 0644 -> 0600; the owner's bits stay):
    logs and recordings left by an older version or another umask. A directory in
    ``shallow`` (one btcbot shares, e.g. the config's own) is checked and tightened
    itself, its contents left alone."""
    audit = DirAudit()
    uid = os.getuid()
    for label, path in dirs.items():
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            audit.refused.append(f"{label} {path}: cannot stat: {exc.strerror or exc}")
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISDIR(st.st_mode):
            audit.refused.append(f"{label} {path}: not a directory")
        elif st.st_uid != uid:
            audit.refused.append(f"{label} {path}: owned by uid {st.st_uid}, not by this "
                                 f"user (uid {uid})")
        elif mode & (stat.S_IWGRP | stat.S_IWOTH):
            who = "everyone" if mode & stat.S_IWOTH else "its group"
            audit.refused.append(f"{label} {path}: writable by {who} (mode {mode:03o}); "
                                 f"check its contents, then chmod 700 {path}")
        else:
            fixed = _tighten(path, mode, contents=path.resolve() not in (shallow or set()))
            if fixed:
                audit.fixed.append(f"{label} {path}: was readable by others (mode {mode:03o}); "
                                   f"now {mode & 0o700:03o}, {fixed}")
    return audit


def _tighten(path: Path, mode: int, *, contents: bool = True) -> str:
    """Remove group/other bits from ``path`` and (``contents``) everything in it;
    returns what was done in words ("" when nothing was needed)."""
    changed = failed = 0
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
    for root, dirnames, filenames in os.walk(path) if contents else ():
        for name in dirnames + filenames:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o077:
                    continue
                os.chmod(p, stat.S_IMODE(st.st_mode) & 0o700)
                changed += 1
            except OSError:
                failed += 1
    if not (mode & 0o077 or changed or failed):
        return ""
    if not contents:
        return "its contents left alone (shared with the config file)"
    words = f"{changed} entr{'y' if changed == 1 else 'ies'} inside made owner-only"
    return words + (f" ({failed} could not be changed)" if failed else "")


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
    """Write ``data`` durably and atomically to a 0600 file: a crash, power loss included,
    leaves the old file or the new one, never half of one (the data is fsynced before the
    rename, the directory after it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:  # a write may be short (a full disk raises instead)
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
