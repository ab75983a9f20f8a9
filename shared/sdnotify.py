"""systemd's notify protocol (sd_notify(3)), for a supervisor run as a Type=notify unit:
``READY=1`` once every actor is READY, ``WATCHDOG=1`` from the supervisor's monitor loop
(so WatchdogSec= restarts a supervisor whose event loop is stuck), ``STOPPING=1`` on the
way out. A no-op when systemd did not set NOTIFY_SOCKET (every other way of running it).
"""

from __future__ import annotations

import os
import socket


def notify(message: str, env_var: str = "NOTIFY_SOCKET") -> bool:
    """Send one notification; True if it was sent. Never raises: systemd being away or
    slow must not stop the supervisor (a missed WATCHDOG=1 is systemd's to act on)."""
    address = os.environ.get(env_var, "")
    if not address or address[0] not in ("/", "@"):
        return False
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True
