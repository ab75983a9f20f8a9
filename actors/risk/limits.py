"""Limits, as pure functions of (intent, risk state, config, clock).

Blocking limits (open orders, cooldown, order rate, daily loss) return reason codes.
Sizing limits (max notional, position cap, cash reserve, available position) shrink
the quantity and say why; shrinking to nothing is a rejection with the same code.
"""

from __future__ import annotations

from decimal import Decimal

from bus.messages import Intent
from shared.config import RiskConfig

from .state import RiskState, orders_in_last_minute


def blocking_limits(intent: Intent, state: RiskState, risk: RiskConfig, now_ns: int) -> list[str]:
    reasons: list[str] = []
    symbol = intent.symbol
    if state.open_count(symbol) >= risk.max_open_orders_per_symbol:
        reasons.append("limit:max_open_orders")
    last = state.last_order_ns.get(symbol)
    if last is not None and now_ns - last < int(risk.cooldown_s * 1e9):
        reasons.append("limit:cooldown")
    if orders_in_last_minute(state, now_ns) >= risk.max_orders_per_minute:
        reasons.append("limit:order_rate")
    if risk.max_daily_loss_try > 0 and state.daily_loss() >= risk.max_daily_loss_try:
        reasons.append("limit:daily_loss")
    return reasons


def size_limits(
    intent: Intent, price: Decimal, quantity: Decimal, state: RiskState, risk: RiskConfig,
) -> tuple[Decimal, list[str], list[str]]:
    """(allowed quantity, resize reasons, reject reasons) at the (rounded) ``price``."""
    resized: list[str] = []
    rejected: list[str] = []

    def cap(limit_qty: Decimal, code: str) -> None:
        nonlocal quantity
        if limit_qty <= 0:
            rejected.append(code)
        elif quantity > limit_qty:
            quantity = limit_qty
            resized.append(code)

    if risk.max_notional_per_order_try > 0:
        cap(risk.max_notional_per_order_try / price, "limit:max_notional")
    position = state.positions.get(intent.symbol)
    held = position.quantity if position is not None else Decimal(0)
    open_orders = state.open_orders.get(intent.symbol, {}).values()
    if intent.side == "buy":
        open_buys = sum((o.remaining for o in open_orders if o.side == "buy"), Decimal(0))
        room = risk.max_position_try_per_symbol - (held + open_buys) * price
        cap(room / price, "limit:position_cap")
        if state.free_quote is None:
            rejected.append("limit:cash_unknown")
        else:
            cap((state.free_quote - risk.try_cash_reserve) / price, "limit:cash_reserve")
    else:
        open_sells = sum((o.remaining for o in open_orders if o.side == "sell"), Decimal(0))
        cap(held - open_sells, "limit:position_available")
    return quantity, resized, rejected
