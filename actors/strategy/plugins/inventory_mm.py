"""An inventory-skewed market maker: a second, different strategy on the plug-in API.

It quotes both sides around a *reservation price* that leans against its inventory:
``reservation = mid * (1 - skew_bps/10000 * r)``, where ``r`` is the inventory's value
at the mid over ``max_inventory_try``, clamped to [-1, 1] (spot: r >= 0). Holding more,
it quotes lower on both sides, so its ask is hit sooner and its bid later. Quotes sit
``half_spread_bps`` either side of the reservation and never cross the book (a bid at
most the best bid, an ask at least the best ask: it means to be a maker).

Per book: an open quote further than ``requote_bps`` from its target is cancelled (the
next book after it ended places the new one); with no open buy, room under the inventory
cap and cash, it places a buy of ``quote_notional_try``; with no open sell and base held,
a sell of the same value (at most what it holds). One new order per call: the host runs
one intent per symbol at a time. Risk must allow two open orders per symbol
(``risk.max_open_orders_per_symbol = 2``) and a short cooldown for both sides to rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from actors.strategy.api import Action, Cancel, Params, Place, Strategy, SymbolContext

BPS = Decimal(10_000)


class InventoryMMParams(Params, frozen=True, kw_only=True, forbid_unknown_fields=True):
    quote_notional_try: Decimal = Decimal("150")
    half_spread_bps: int = 20
    skew_bps: int = 30  # lean of the reservation price at full inventory
    max_inventory_try: Decimal = Decimal("1000")
    requote_bps: int = 15
    ttl_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("quote_notional_try", "max_inventory_try"):
            value = getattr(self, name)
            if not value.is_finite() or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0 (got {value})")
        if self.half_spread_bps < 0 or self.skew_bps < 0 or self.requote_bps <= 0:
            raise ValueError("half_spread_bps, skew_bps >= 0 and requote_bps > 0 required")


class InventoryMarketMaker(Strategy):
    name = "inventory_mm_v1"
    Params = InventoryMMParams

    def __init__(self, params: InventoryMMParams) -> None:
        super().__init__(params)
        self.p = params

    def order_sizes(self) -> dict[str, Decimal]:
        return {"quote_notional_try": self.p.quote_notional_try}

    def targets(self, ctx: SymbolContext) -> tuple[Decimal, Decimal]:
        """(bid, ask) this book asks for."""
        mid = ctx.mid
        ratio = max(Decimal(-1), min(Decimal(1), ctx.quantity * mid / self.p.max_inventory_try))
        reservation = mid * (1 - Decimal(self.p.skew_bps) / BPS * ratio)
        half = Decimal(self.p.half_spread_bps) / BPS
        return min(reservation * (1 - half), ctx.bid), max(reservation * (1 + half), ctx.ask)

    def on_book(self, ctx: SymbolContext) -> Sequence[Action]:
        if ctx.bid <= 0 or ctx.ask < ctx.bid:
            return ()
        bid, ask = self.targets(ctx)
        actions: list[Action] = []
        sides = set()
        for o in ctx.open_orders:
            sides.add(o.side)
            target = bid if o.side == "buy" else ask
            if o.price > 0 and abs(o.price - target) / target * BPS > self.p.requote_bps:
                actions.append(Cancel(o.client_order_id, f"requote {o.side}"))
        if ctx.pending:
            return actions
        inventory = ctx.quantity * ctx.mid
        if ("buy" not in sides and inventory + self.p.quote_notional_try
                <= self.p.max_inventory_try and ctx.free_quote >= self.p.quote_notional_try):
            actions.append(Place("buy", bid, self.p.quote_notional_try / bid, "mm_bid",
                                 self.p.ttl_s))
        elif "sell" not in sides and ctx.quantity > 0:
            qty = min(ctx.quantity, self.p.quote_notional_try / ask)
            actions.append(Place("sell", ask, qty, "mm_ask", self.p.ttl_s))
        return actions
