"""Private files and directories: what only the bot's own user may read or write.

Runtime sockets, keys, recordings and the database hold things another local user
must not see or change, so their directories are 0700 and their files 0600.
"""

from __future__ import annotations

import os
from pathlib import Path


def ensure_private_dir(path: str | Path) -> None:
    """Create ``path`` (and parents) and make it 0700 whatever the umask said."""
    Path(path).mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_private_file(path: str | Path, data: bytes) -> None:
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
