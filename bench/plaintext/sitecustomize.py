"""bench/latency.py only: the pipeline with CURVE and the roles checks switched off, to
measure what they cost on tick-to-order.

There is no plaintext mode in btcbot (bus/auth.py): this file patches it out of every
Python process that starts with this directory on PYTHONPATH, which only
``bench/latency.py`` sets, for its comparison run. Nothing in the config or the CLI can
reach it; whoever can put a sitecustomize on a process's path can run any code there.

Servers keep a ZAP domain and the handler (a NULL-mechanism client is then named
``anonymous``, so the proxy still finds a User-Id on every frame); the roles checks
allow everything, since there is no identity to check.
"""

from __future__ import annotations

import sys
from typing import Any

import zmq

import bus.auth
import bus.roles
import bus.transport

sys.stderr.write("bench/plaintext: CURVE and roles checks OFF in this process (benchmark)\n")


def _client(self: bus.auth.BusAuth, sock: zmq.Socket[Any], server: str) -> None:
    return None


def _server(self: bus.auth.BusAuth, sock: zmq.Socket[Any]) -> None:
    self._ensure_authenticator(sock.context)
    sock.zap_domain = bus.auth.ZAP_DOMAIN.encode()


bus.auth.BusAuth.client = _client  # type: ignore[method-assign]
bus.auth.BusAuth.server = _server  # type: ignore[method-assign]
bus.roles.PublishGate.allowed = lambda self, identity, topic: True  # type: ignore[method-assign]
bus.transport.may_call = lambda server, caller, command: True  # type: ignore[assignment]
