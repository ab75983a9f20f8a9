"""Throw-away CURVE keys for in-process tests: every identity of the roles table,
held in memory (bus/auth.py ``Keyset``). Multi-process tests use keys on disk, made
as the supervisor makes them (``bus.auth.ensure_keys``)."""

from __future__ import annotations

import asyncio
from typing import Any

import zmq.asyncio

from bus.auth import BusAuth, Keyset, ensure_keys, keys_dir_of, load_for
from bus.roles import IDENTITIES, REPLAY
from bus.transport import Handler, RequestServer
from shared.config import Config

KEYS = Keyset((*IDENTITIES, REPLAY))


def auth(identity: str) -> BusAuth:
    return KEYS.auth(identity)


class StandIn:
    """A stand-in command server for ``identity`` (``executor``, ``risk``…) on its own
    context (a context has one ZAP handler, so one serving identity), keys from disk."""

    def __init__(self, cfg: Config, identity: str, handler: Handler, commands: Any) -> None:
        self.ctx = zmq.asyncio.Context()
        self.auth = load_for(cfg.data_path, identity)
        self.server = RequestServer(self.ctx, cfg.command_endpoint(identity), handler,
                                    commands=commands, auth=self.auth)
        self.task = asyncio.create_task(self.server.serve())

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.server.close()
        self.auth.close()
        self.ctx.destroy(0)


def disk_keys(cfg: Config) -> None:
    """What the supervisor does at its first start, for a test that builds actors itself."""
    ensure_keys(keys_dir_of(cfg.data_path))
