"""The operator settles what the executor could not: a VANISHED order (held open here,
unknown to the exchange) is resolved ``cancelled`` or ``filled``.

``filled`` books the remaining quantity as one fill at the order's limit price with no
fee (trade id ``resolve-<cid>``), so positions and PnL include it; the next reconcile
compares the result with the exchange's balances like any other fill. Every resolution
is audited in ``order_resolutions`` (when, old → new state, why, who), published as the
order's event and an ``incident.resolved``, and once no VANISHED order is left a safety
latch that was set for vanished orders is cleared (any other latch reason stays).
"""

from __future__ import annotations

from decimal import Decimal

from actors.executor.accounting import PositionState, apply_fill
from actors.executor.db import FillRow
from actors.executor.gates import Gates
from actors.executor.incidents import VANISHED_PREFIX, Incidents
from actors.executor.orders import Orders
from actors.executor.state import ExecState
from bus.messages import Ack, Fill, ResolveOrder
from bus.transport import CommandError

STATE_OF = {"cancelled": "CANCELED", "filled": "FILLED"}


class Resolver:
    def __init__(self, s: ExecState, gates: Gates, orders: Orders,
                 incidents: Incidents) -> None:
        self.s = s
        self.gates = gates
        self.orders = orders
        self.incidents = incidents

    def resolve(self, req: ResolveOrder) -> Ack:
        s = self.s
        cid = req.client_order_id
        order = s.db.get_order(cid)
        if order is None:
            raise CommandError(f"unknown order {cid}")
        if order.state != "VANISHED":
            raise CommandError(f"order {cid} is {order.state}: only a VANISHED order is "
                               "resolved by an operator")
        if not req.reason.strip():
            raise CommandError("a resolution needs a reason (--reason TEXT)")
        now = s.now()
        new_state = STATE_OF[req.resolution]
        fill = position = None
        if new_state == "FILLED":
            remaining = order.quantity - order.filled_quantity
            quote = order.symbol[-3:] if order.symbol.endswith("TRY") else "QUOTE"
            fill = FillRow(f"resolve-{cid}", order.exchange_order_id or 0, cid, order.symbol,
                           order.side, order.price, remaining, Decimal(0), quote,
                           int(now * 1000))
            pos = s.db.positions(s.mode).get(order.symbol, PositionState())
            position = apply_fill(pos, order.side, order.price, remaining, Decimal(0))
        s.db.resolve_order(cid, order.state, new_state, req.reason, req.operator, now,
                           fill, position)
        s.counters["resolved"] += 1
        if fill is not None:
            s.publish(Fill(trade_id=fill.trade_id, exchange_order_id=fill.exchange_order_id,
                           client_order_id=cid, symbol=fill.symbol,
                           side=fill.side, price=fill.price,  # type: ignore[arg-type]
                           quantity=fill.quantity, fee=fill.fee, fee_asset=fill.fee_asset,
                           ts_ms=fill.ts_ms))
        self.orders.publish_order(cid, f"resolved:{req.resolution}")
        self.incidents.record("resolved", f"{cid} VANISHED -> {new_state} by "
                              f"{req.operator or 'operator'}: {req.reason}",
                              symbol=order.symbol, client_order_id=cid)
        cleared = ""
        safety, why = self.gates.latches.get("safety_latch", (False, ""))
        if (safety and why.startswith(VANISHED_PREFIX)
                and not s.db.orders_in_states(s.mode, ("VANISHED",))):
            self.gates.set_latch("safety_latch", False,
                                 f"every vanished order resolved (last: {cid})")
            cleared = "; safety latch cleared"
        return Ack(detail=f"{cid}: VANISHED -> {new_state}{cleared}")
