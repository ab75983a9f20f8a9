"""``btcbot-supervisor orders …``: the operator's word on orders the executor could not
settle itself. Registered on the main CLI group by ``actors/supervisor/cli.py``.

``orders resolve ORDER --as cancelled|filled --reason TEXT`` settles a VANISHED order
(open in the executor's DB, unknown to the exchange): the request goes straight to the
executor's command socket (the executor owns the DB), which audits it (when, what, why,
who), publishes it, and clears a safety latch that was set for vanished orders once
none is left.
"""

from __future__ import annotations

import asyncio
import getpass
import sys

import click
import zmq.asyncio

from bus.control import operator_auth
from bus.messages import Ack, ResolveOrder
from bus.transport import RequestClient, RequestFailed
from shared.config import ConfigError, load_config

EXIT_FAILURE, EXIT_USAGE = 1, 2


@click.group()
def orders() -> None:
    """Inspect and settle orders."""


@orders.command()
@click.argument("order")
@click.option("--as", "resolution", type=click.Choice(["cancelled", "filled"]), required=True,
              help="what became of the order (filled: at its limit price, no fee)")
@click.option("--reason", required=True, help="why: kept in the DB's audit")
@click.pass_context
def resolve(ctx: click.Context, order: str, resolution: str, reason: str) -> None:
    """Settle a VANISHED order as cancelled or filled."""
    try:
        cfg = load_config(ctx.obj["config"])
    except ConfigError as exc:
        click.echo(f"btcbot-supervisor: config error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if not reason.strip():
        click.echo("btcbot-supervisor: --reason must say why", err=True)
        sys.exit(EXIT_USAGE)

    async def go() -> object:
        auth = operator_auth(cfg.data_path, cfg.identity("operator"))
        zctx = zmq.asyncio.Context()
        client = RequestClient(zctx, cfg.command_endpoint("executor"), auth, server="executor",
                               timeout_s=5.0, retries=1)
        try:
            return await client.request(ResolveOrder(
                client_order_id=order, resolution=resolution,  # type: ignore[arg-type]
                reason=reason, operator=getpass.getuser()))
        finally:
            client.close()
            zctx.destroy(0)

    try:
        reply = asyncio.run(go())
    except RequestFailed as exc:
        click.echo(f"btcbot-supervisor: orders resolve: executor: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(reply.detail if isinstance(reply, Ack) else str(reply))
