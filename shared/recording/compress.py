"""Compressing a closed segment, crash-safely.

The sequence, for ``X.btcrec``, holding the segment's lock throughout (locks.py)::

    1. make sure X.btcidx describes it (scan if needed)
    2. write X.btcrec.zst.tmp (one zstd frame with its content size), fsync it
    3. rename X.btcrec.zst.tmp -> X.btcrec.zst, fsync the directory
    4. unlink X.btcrec, fsync the directory

Why a SIGKILL (or power loss) at any point leaves every record readable exactly once:
readers never look at ``*.tmp`` files; a ``.zst`` name only ever appears by rename after
its content was fsynced, so it is always a complete copy of the segment; and when both
``X.btcrec`` and ``X.btcrec.zst`` exist (a kill between 3 and 4) the directory listing
(directory.py) yields the stem once, choosing the compressed copy, whose content is
byte-for-byte the original's. ``cleanup()`` later removes the leftovers: a ``.tmp`` and
an original whose compressed copy exists.

The fault seam: ``fault(step)`` is called after each step with one of ``STEPS``; the
tests pass a function that SIGKILLs the process there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import zstandard

from shared.recording.format import _HEADER, MAGIC, SUFFIX, TMP_SUFFIX, ZSUFFIX
from shared.recording.index import ensure_index
from shared.recording.locks import try_lock

STEPS = ("indexed", "tmp_partial", "tmp_synced", "renamed", "original_removed")
DEFAULT_LEVEL = 3
_CHUNK = 1 << 20

Fault = Callable[[str], None]


def _no_fault(step: str) -> None:
    pass


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compressed_path(segment: Path) -> Path:
    return segment.with_name(segment.name[: -len(SUFFIX)] + ZSUFFIX)


def compress_segment(
    segment: Path, level: int = DEFAULT_LEVEL, fault: Fault = _no_fault
) -> Path | None:
    """Compress a closed, uncompressed segment; return the compressed path, or None
    when the segment is open (or being handled by someone else, or gone). Raises
    OSError (e.g. ENOSPC) after removing its temporary file; the original is intact."""
    if not segment.name.endswith(SUFFIX):
        raise ValueError(f"not an uncompressed segment: {segment}")
    lock = try_lock(segment)
    if lock is None:
        return None
    try:
        st = os.fstat(lock)
        with open(lock, "rb", closefd=False) as f:
            if f.read(len(MAGIC)) != MAGIC or st.st_size < _HEADER.size:
                return None  # a segment whose writer has not written its header yet
        target = compressed_path(segment)
        if target.exists():
            # A previous run was killed between rename and unlink: the copy is whole.
            _remove_original(segment, fault)
            return target
        ensure_index(segment, locked=True)
        fault("indexed")
        tmp = target.with_name(target.name + TMP_SUFFIX)
        try:
            _write_compressed(lock, st.st_size, tmp, level, fault)
            fault("tmp_synced")
            os.rename(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(segment.parent)
        fault("renamed")
        _remove_original(segment, fault)
        return target
    finally:
        os.close(lock)


def _write_compressed(src_fd: int, size: int, tmp: Path, level: int, fault: Fault) -> None:
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 0o600)
    with open(fd, "wb") as out, open(src_fd, "rb", closefd=False) as src:
        src.seek(0)
        writer = cctx.stream_writer(out, size=size, closefd=False)
        first = True
        while chunk := src.read(_CHUNK):
            writer.write(chunk)
            if first:
                writer.flush(zstandard.FLUSH_BLOCK)
                fault("tmp_partial")
                first = False
        writer.flush(zstandard.FLUSH_FRAME)
        out.flush()
        os.fsync(out.fileno())


def _remove_original(segment: Path, fault: Fault) -> None:
    segment.unlink(missing_ok=True)
    fsync_dir(segment.parent)
    fault("original_removed")
