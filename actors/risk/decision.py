"""Risk's decision: a pure function of (intent, state, config, clock value).

No I/O and no clock reads: ``now_ns`` is passed in (the actor uses the intent's
``created_wall_ns``), so a replay of the same messages reproduces every verdict.
Order of evaluation: gates, market-data freshness, exchange rules, blocking limits,
then sizing, rounding and minimums. Every failing check adds its reason code; a
verdict is ``rejected`` if any check blocks, ``resized`` if a sizing limit shrank the
order, else ``approved``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from bus.messages import Intent
from shared.config import Config

from .gates import data_gate, global_gates
from .limits import blocking_limits, size_limits
from .rounding import round_price, round_quantity
from .state import RiskState


@dataclass(frozen=True)
class Verdict:
    verdict: str  # approved | resized | rejected
    reasons: list[str] = field(default_factory=list)
    price: Decimal = Decimal(0)
    quantity: Decimal = Decimal(0)

    @property
    def approved(self) -> bool:
        return self.verdict != "rejected"


def _reject(reasons: list[str], intent: Intent) -> Verdict:
    return Verdict("rejected", reasons, intent.price, Decimal(0))


def decide(intent: Intent, state: RiskState, cfg: Config, now_ns: int) -> Verdict:
    reasons = global_gates(cfg, state, now_ns)
    reasons += data_gate(cfg, state, intent.symbol, now_ns)
    rules = state.rules.get(intent.symbol)
    if rules is None:
        reasons.append("exchange_rules_unavailable")
    elif rules.status.upper() != "TRADING":
        reasons.append("exchange:symbol_not_trading")
    reasons += blocking_limits(intent, state, cfg.risk, now_ns)
    if intent.order_type != "limit":
        reasons.append("intent:unsupported_order_type")
    if intent.price <= 0 or intent.quantity <= 0:
        reasons.append("intent:invalid")
    if reasons or rules is None:
        return _reject(reasons, intent)

    price = round_price(intent.price, intent.side, rules)
    if price <= 0:
        return _reject(["exchange:non_positive_after_rounding"], intent)
    if (rules.min_price > 0 and price < rules.min_price) or (
            rules.max_price > 0 and price > rules.max_price):
        return _reject(["exchange:price_bounds"], intent)
    quantity, resized, rejected = size_limits(intent, price, intent.quantity, state, cfg.risk)
    if rejected:
        return _reject(resized + rejected, intent)
    quantity = round_quantity(quantity, rules)
    if quantity <= 0:
        return _reject([*resized, "exchange:non_positive_after_rounding"], intent)
    total = price * quantity
    if total < cfg.risk.min_order_notional_try:
        reasons.append("limit:min_notional")
    if rules.min_total > 0 and total < rules.min_total:
        reasons.append("exchange:min_total")
    if reasons:
        return _reject(resized + reasons, intent)
    return Verdict("resized" if resized else "approved", resized, price, quantity)
