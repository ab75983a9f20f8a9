"""Deterministic identifiers: the same decision always gets the same id, also
after a restart, which is what makes "never twice" checkable end to end."""

from __future__ import annotations

import hashlib
from decimal import Decimal

CLIENT_ID_MAX_LEN = 50  # BTCTurk's newOrderClientId limit


def intent_id(strategy: str, symbol: str, side: str, reason: str, anchor: str) -> str:
    """``anchor`` is what makes a decision unique in time (e.g. the position epoch
    and the decision's sequence), never wall-clock time alone."""
    digest = hashlib.sha256(f"{strategy}|{symbol}|{side}|{reason}|{anchor}".encode()).hexdigest()
    return f"{symbol}-{side}-{digest[:20]}"


def client_order_id(prefix: str, intent: str) -> str:
    """The exchange-visible id of an intent's order: prefix + hash, under 50 chars."""
    digest = hashlib.sha256(intent.encode()).hexdigest()[:32]
    cid = f"{prefix}-{digest}"
    if len(cid) > CLIENT_ID_MAX_LEN:
        raise ValueError(f"client order id prefix {prefix!r} too long")
    return cid


def decimal_key(value: Decimal) -> str:
    """A canonical text for a Decimal inside an id (1.50 and 1.5 are the same)."""
    return format(value.normalize(), "f")
