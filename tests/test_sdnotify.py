"""systemd notify wiring (shared/sdnotify.py): the supervisor says READY=1 when every
actor is READY and WATCHDOG=1 while its monitor loop runs; its children never see
NOTIFY_SOCKET (deploy/btcbot.service)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil
import pytest

from shared.sdnotify import notify


@pytest.fixture
def listener(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def drain(sock: socket.socket, until: float) -> list[str]:
    out: list[str] = []
    while time.monotonic() < until:
        try:
            out.append(sock.recv(1024).decode())
        except TimeoutError:
            if out and "READY=1" in out and out.count("WATCHDOG=1") >= 2:
                break
    return out


def test_notify_sends_to_the_socket_and_is_a_no_op_without_one(listener, monkeypatch) -> None:
    path, sock = listener
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert notify("READY=1") is True
    assert sock.recv(64) == b"READY=1"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path.parent / "gone.sock"))
    assert notify("WATCHDOG=1") is False  # systemd away: never raises


def test_supervisor_notifies_ready_and_watchdog_and_hides_the_socket_from_children(
        listener, make_pipeline) -> None:
    path, sock = listener
    p = make_pipeline(env={"NOTIFY_SOCKET": str(path)})
    p.start()
    got = drain(sock, time.monotonic() + 20)
    assert "READY=1" in got and got.count("WATCHDOG=1") >= 2, got
    sup = psutil.Process(p.supervisor_pid())
    assert sup.environ().get("NOTIFY_SOCKET") == str(path)
    children = sup.children()
    assert children and all("NOTIFY_SOCKET" not in c.environ() for c in children)
    p.stop()
    got = drain(sock, time.monotonic() + 2)
    assert "STOPPING=1" in got, got
