"""How long ``replay --verify --max`` takes on a default paper session (issue 15: a
60 s session verifies in under 10 s), and that it passes at --max and at 1x.

    .venv/bin/python bench/replay_verify.py [--seconds 60] [--no-realtime] [--keep DIR]

Copies the repository's supervisor.toml (the default paper config) into a temp dir with
free ports, records ``--seconds`` of a paper session (start --detach, wait, stop), then
runs ``replay recordings --verify --max`` (timed, whole command: isolated pipeline start,
feed, settle, stop) and, unless --no-realtime, ``replay --verify`` at the recorded
speed. Prints the figures; exit 0 when both verify OK and --max took under --goal s.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUPERVISOR = [sys.executable, "-m", "actors.supervisor"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPERVISOR, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=config.parent, check=False)


def verify(config: Path, *speed: str) -> tuple[float, str, bool]:
    t0 = time.monotonic()
    r = cli(config, "replay", "recordings", "--verify", *speed)
    took = time.monotonic() - t0
    last = (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]
    return took, last, r.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--goal", type=float, default=10.0, help="--max must take less (s)")
    ap.add_argument("--no-realtime", action="store_true", help="skip the 1x verify")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="verify-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "supervisor.toml"
    text = (REPO / "supervisor.toml").read_text()
    config.write_text(re.sub(r"(?m)^port = \d+", lambda _m: f"port = {free_port()}", text))
    try:
        r = cli(config, "start", "--detach")
        if r.returncode != 0:
            print(r.stdout, r.stderr, file=sys.stderr)
            return 1
        time.sleep(args.seconds)
        cli(config, "stop")
        took, line, ok_max = verify(config, "--max")
        print(f"session {args.seconds:.0f}s; verify --max took {took:.1f}s: {line}")
        ok_rt = True
        if not args.no_realtime:
            took_rt, line_rt, ok_rt = verify(config)
            print(f"verify at 1x took {took_rt:.1f}s: {line_rt}")
        return 0 if ok_max and ok_rt and took < args.goal else 1
    finally:
        cli(config, "stop")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
