"""The log of every order submission the simulator received (served at /sim/received-orders).

Tests and the chaos bench read it to prove exactly-once effects: each entry records what
arrived and what became of it (accepted, rejected, or a fault that broke the answer).
"""

from __future__ import annotations

from typing import Any


class OrderLog:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def clear(self) -> None:
        self.entries.clear()

    def log(self, fields: dict[str, Any], received_mono_ns: int) -> dict[str, Any]:
        low = {k.lower(): v for k, v in fields.items()}

        def text(key: str) -> str | None:
            value = low.get(key)
            return None if value is None else str(value)

        entry: dict[str, Any] = {
            "seq": len(self.entries) + 1,
            "newOrderClientId": text("neworderclientid"),
            "pairSymbol": text("pairsymbol"),
            "orderType": text("ordertype"),
            "orderMethod": text("ordermethod"),
            "price": text("price"),
            "quantity": text("quantity"),
            "received_mono_ns": received_mono_ns,
            "order_id": None,
            "outcome": "pending",
            "http_status": None,
        }
        self.entries.append(entry)
        return entry


def set_outcome(ctx: dict[str, Any], outcome: str, order_id: int | None, status: int) -> None:
    entry = ctx.get("log")
    if entry is not None:
        entry.update(outcome=outcome, order_id=order_id, http_status=status)


def mark_outcome(ctx: dict[str, Any], suffix: str) -> None:
    """A fault broke the answer after the outcome was decided: say so, keep the outcome."""
    entry = ctx.get("log")
    if entry is not None:
        entry["outcome"] = f"{entry['outcome']}_{suffix}"
        entry["http_status"] = None
