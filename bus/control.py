"""Operator commands to the supervisor's control socket: the one code path the CLI
and the dashboard share, so both see the same status document and send the same
commands (the supervisor computes the status; nobody else recomputes it)."""

from __future__ import annotations

import json
import os
from typing import Any

import zmq.asyncio

from bus.auth import BusAuth, KeysError, load_for
from bus.messages import ReplyBody, StatusReply, SupervisorCommand
from bus.roles import OPERATOR, SUPERVISOR
from bus.transport import RequestClient, RequestFailed

OperatorCommand = str  # one of SupervisorCommand.command's literals


def operator_auth(data_path: str | os.PathLike[str], identity: str = OPERATOR) -> BusAuth:
    """The operator's identity (the CLI's key, created by the supervisor at first
    start; ``operator@<host_id>`` on a host with a host_id); RequestFailed naming the
    missing file when there is none."""
    try:
        return load_for(data_path, identity)
    except KeysError as exc:
        raise RequestFailed(f"no operator key: {exc}") from None


async def supervisor_request(ctx: zmq.asyncio.Context, endpoint: str, command: OperatorCommand,
                             *, auth: BusAuth, timeout_s: float = 5.0, retries: int = 1,
                             server: str = SUPERVISOR, **kwargs: Any) -> ReplyBody | None:
    """One command to the running supervisor, as ``auth``'s identity (the operator or
    the dashboard); RequestFailed if it is not there or refuses (the message says why)."""
    client = RequestClient(ctx, endpoint, auth, server=server, timeout_s=timeout_s,
                           retries=retries)
    try:
        return await client.request(SupervisorCommand(command=command, **kwargs))  # type: ignore[arg-type]
    finally:
        client.close()


async def fetch_status(ctx: zmq.asyncio.Context, endpoint: str, *, auth: BusAuth,
                       timeout_s: float = 1.0, server: str = SUPERVISOR,
                       ) -> dict[str, Any] | None:
    """The supervisor's status document (what ``status --json`` prints), or None when
    the supervisor does not answer."""
    try:
        reply = await supervisor_request(ctx, endpoint, "status", auth=auth, server=server,
                                         timeout_s=timeout_s)
    except RequestFailed:
        return None
    if not isinstance(reply, StatusReply):
        return None
    doc: dict[str, Any] = json.loads(reply.json)
    return doc
