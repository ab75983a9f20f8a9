"""Operator commands to the supervisor's control socket: the one code path the CLI
and the dashboard share, so both see the same status document and send the same
commands (the supervisor computes the status; nobody else recomputes it)."""

from __future__ import annotations

import json
from typing import Any

import zmq.asyncio

from bus.messages import ReplyBody, StatusReply, SupervisorCommand
from bus.transport import RequestClient, RequestFailed

OperatorCommand = str  # one of SupervisorCommand.command's literals


async def supervisor_request(ctx: zmq.asyncio.Context, endpoint: str, command: OperatorCommand,
                             *, sender: str, timeout_s: float = 5.0, retries: int = 1,
                             **kwargs: Any) -> ReplyBody | None:
    """One command to the running supervisor; RequestFailed if it is not there or
    refuses (the message says why)."""
    client = RequestClient(ctx, endpoint, sender, timeout_s=timeout_s, retries=retries)
    try:
        return await client.request(SupervisorCommand(command=command, **kwargs))  # type: ignore[arg-type]
    finally:
        client.close()


async def fetch_status(ctx: zmq.asyncio.Context, endpoint: str, *, sender: str,
                       timeout_s: float = 1.0) -> dict[str, Any] | None:
    """The supervisor's status document (what ``status --json`` prints), or None when
    the supervisor does not answer."""
    try:
        reply = await supervisor_request(ctx, endpoint, "status", sender=sender,
                                         timeout_s=timeout_s)
    except RequestFailed:
        return None
    if not isinstance(reply, StatusReply):
        return None
    doc: dict[str, Any] = json.loads(reply.json)
    return doc
