"""Real browsers attached to the dashboard, for the benchmarks: headless Debian
chromium processes, each with a fresh profile, logged in through the printed URL and
left on a page so that its script follows the live updates (server-sent events)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,900"]


@contextmanager
def browsers(url: str, pages: list[str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One chromium per entry of ``pages`` (page names, e.g. "markets"), each opened on
    ``<base>/<page>?token=…``: the dashboard trades the token for a cookie and redirects
    to the same page, whose script then follows the live updates."""
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    base, _, token = url.partition("/?token=")
    procs: list[subprocess.Popen[bytes]] = []
    dirs: list[str] = []
    try:
        for page in pages:
            profile = tempfile.mkdtemp(prefix="btcbot-bench-chromium-")
            dirs.append(profile)
            procs.append(subprocess.Popen(
                [CHROMIUM, *ARGS, f"--user-data-dir={profile}", f"{base}/{page}?token={token}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        time.sleep(3.0)  # start, log in, open the event stream
        yield procs
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
