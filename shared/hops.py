"""The pipeline's latency hops, by name: what status, the dashboard, `/metrics` and the
config's per-hop bounds (``[supervisor.hop_p99_bounds_ms]``) call them.

The names are fixed strings (Prometheus labels and operators' alert rules match them),
listed in pipeline order. How each is measured is in ``bus/health.py``.
"""

from __future__ import annotations

EXCHANGE_TO_MARKETDATA = "exchange→marketdata"
MARKETDATA = "marketdata"
BOOK_TO_INTENT = "book→intent"
INTENT_TO_DECISION = "intent→decision"
INTENT_TO_ORDER = "intent→order"
EXECUTOR_TO_EXCHANGE = "executor→exchange"

# exchange → marketdata → strategy → risk → executor → exchange
PIPELINE: tuple[str, ...] = (EXCHANGE_TO_MARKETDATA, MARKETDATA, BOOK_TO_INTENT,
                             INTENT_TO_DECISION, INTENT_TO_ORDER, EXECUTOR_TO_EXCHANGE)

MEANING: dict[str, str] = {
    EXCHANGE_TO_MARKETDATA: "exchange's book stamp -> marketdata's receipt (REST books)",
    MARKETDATA: "marketdata's receipt of a book -> its publication",
    BOOK_TO_INTENT: "book received by marketdata -> strategy's intent published",
    INTENT_TO_DECISION: "intent -> risk's decision (approved: after the executor's ack)",
    INTENT_TO_ORDER: "intent -> the executor's first order event (reserved)",
    EXECUTOR_TO_EXCHANGE: "order reserved -> the exchange's answer (open/rejected...)",
}


def transit(observer: str) -> str:
    """The bus's own hop as one subscriber sees it: any publication → its receipt."""
    return f"bus→{observer}"


# Hops a bound can be configured for: the pipeline's and the supervisor's view of the bus.
BOUNDABLE: tuple[str, ...] = (*PIPELINE, transit("supervisor"))
