"""``why ORDER_OR_INTENT_ID``: the story of one decision, assembled from facts.

Pure: ``explain`` takes what ``actors/supervisor/why_sources.py`` read from the DB and
the recordings and returns one JSON-able document; ``render_text`` turns it into a
timeline. The parts, each present when its source had it:

- the book that triggered the intent: the recorded ``md.book`` whose receive stamp is
  the intent's ``book_mono_ns`` (exact), its top levels and its age at the decision;
- the strategy's reason, risk's verdict with every reason code and the limit behind it
  (limit values from the recording's header, i.e. the session's own risk config, else
  the current config, and the document says which);
- the idempotency key (status, reservation and last-change times, attempts, probes) and
  the order's state history from the recorded ``order`` events;
- the send and the exchange's acknowledgement: from the durable reservation (sent right
  after it) to the first state carrying the exchange's order id;
- fills with fees, and the PnL they contributed (shared/pnl.py's definition): the
  symbol's fills replayed in execution order, summing the realised PnL each of this
  order's fills made; net = realised − this order's fees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bus.messages import BookSnapshot, Fill, Intent, OrderEvent, RiskDecision
from shared.pnl import PositionState, apply_fill

TOP_LEVELS = 5

# reason code → the risk config field whose value decided it
REASON_LIMITS: dict[str, str] = {
    "limit:max_open_orders": "max_open_orders_per_symbol",
    "limit:cooldown": "cooldown_s",
    "limit:order_rate": "max_orders_per_minute",
    "limit:daily_loss": "max_daily_loss_try",
    "limit:max_notional": "max_notional_per_order_try",
    "limit:min_notional": "min_order_notional_try",
    "limit:position_cap": "max_position_try_per_symbol",
    "limit:cash_reserve": "try_cash_reserve",
    "gate:executor_state_stale": "executor_state_max_age_s",
}


@dataclass
class KeyFacts:
    status: str
    created_at: float
    updated_at: float
    attempts: int
    probes: int
    reason: str
    exchange_order_id: int | None


@dataclass
class OrderFacts:
    client_order_id: str
    intent_id: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    filled_quantity: Decimal
    state: str
    exchange_order_id: int | None
    reason: str
    created_at: float
    updated_at: float


@dataclass
class WhyFacts:
    query: str
    intent: tuple[int, Intent] | None = None  # (sender's wall ns, body)
    decisions: list[tuple[int, RiskDecision]] = field(default_factory=list)
    order_events: list[tuple[int, OrderEvent]] = field(default_factory=list)
    book: tuple[int, BookSnapshot] | None = None
    order: OrderFacts | None = None
    key: KeyFacts | None = None
    fills: list[Fill] = field(default_factory=list)  # this order's, from the DB
    symbol_fills: list[Fill] = field(default_factory=list)  # the symbol's, execution order
    limits: dict[str, Any] = field(default_factory=dict)
    limits_source: str = ""
    rules_min_total: Decimal | None = None
    notes: list[str] = field(default_factory=list)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _levels(levels: list[tuple[Decimal, Decimal]]) -> list[list[str]]:
    return [[str(p), str(a)] for p, a in levels[:TOP_LEVELS]]


def _reason(code: str, limits: dict[str, Any], min_total: Decimal | None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code}
    name = REASON_LIMITS.get(code)
    if name is not None and name in limits:
        out["limit"], out["value"] = f"risk.{name}", str(limits[name])
    elif code == "exchange:min_total" and min_total is not None:
        out["limit"], out["value"] = "exchange minExchangeValue", str(min_total)
    return out


def pnl_contribution(symbol_fills: list[Fill], mine: set[str]) -> dict[str, str]:
    """What this order's fills realised, by the one PnL definition (shared/pnl.py):
    the symbol's fills replayed in execution order, summing the realised PnL (gross)
    each of ours made; ``net = realized - fees`` (its own fees). An opening fill
    realises nothing and costs its fee; a closing one realises its gain against the
    average cost the earlier fills built."""
    pos = PositionState()
    realized = fees = Decimal(0)
    for f in symbol_fills:
        after = apply_fill(pos, f.side, f.price, f.quantity, f.fee)
        if f.trade_id in mine:
            realized += after.realized_pnl - pos.realized_pnl
            fees += f.fee
        pos = after
    return {"realized": str(realized), "fees": str(fees), "net": str(realized - fees),
            "position_after": str(pos.quantity)}


def explain(f: WhyFacts) -> dict[str, Any]:
    timeline: list[tuple[float, str]] = []
    doc: dict[str, Any] = {"query": f.query, "found": bool(f.intent or f.order or f.decisions)}
    intent_id = (f.intent[1].intent_id if f.intent else f.order.intent_id if f.order
                 else f.decisions[0][1].intent_id if f.decisions else "")
    doc["intent_id"] = intent_id
    doc["client_order_id"] = f.order.client_order_id if f.order else next(
        (d.client_order_id for _, d in f.decisions if d.client_order_id), "")

    if f.book is not None:
        wall, book = f.book
        at_intent = f.intent[1].created_wall_ns if f.intent else wall
        doc["book"] = {"symbol": book.symbol, "source": book.source,
                       "bids": _levels(book.bids), "asks": _levels(book.asks),
                       "received_at": iso(book.recv_wall_ns / 1e9),
                       "age_at_intent_ms": round((at_intent - book.recv_wall_ns) / 1e6, 3),
                       "exchange_age_ms": book.age_ms}
        timeline.append((book.recv_wall_ns / 1e9, f"book {book.symbol} received ({book.source}): "
                         f"best bid {_top(book.bids)} / ask {_top(book.asks)}"))
    elif f.intent is not None:
        f.notes.append("the triggering book is not in the recordings")

    if f.intent is not None:
        wall, it = f.intent
        doc["symbol"] = it.symbol
        doc["strategy"] = {"strategy": it.strategy, "reason": it.reason, "side": it.side,
                           "order_type": it.order_type, "price": str(it.price),
                           "quantity": str(it.quantity), "ttl_s": it.ttl_s,
                           "at": iso(it.created_wall_ns / 1e9)}
        timeline.append((it.created_wall_ns / 1e9, f"strategy {it.strategy}: {it.side} "
                         f"{it.quantity} @ {it.price} because {it.reason}"))
    if f.decisions:
        wall, d = f.decisions[-1]
        doc["symbol"] = doc.get("symbol") or d.symbol
        doc["risk"] = {"verdict": d.verdict,
                       "reasons": [_reason(r, f.limits, f.rules_min_total) for r in d.reasons],
                       "requested_quantity": str(d.requested_quantity),
                       "quantity": str(d.quantity), "price": str(d.price),
                       "executor_status": d.executor_status,
                       "limits": {k: str(v) for k, v in sorted(f.limits.items())},
                       "limits_source": f.limits_source}
        why = ", ".join(d.reasons) or "no objection"
        timeline.append((wall / 1e9, f"risk {d.verdict.upper()} ({why})"
                         + (f"; executor {d.executor_status}" if d.executor_status else "")))
    if f.order is not None:
        o = f.order
        doc["symbol"] = doc.get("symbol") or o.symbol
        doc["order"] = {"state": o.state, "side": o.side, "price": str(o.price),
                        "quantity": str(o.quantity), "filled_quantity": str(o.filled_quantity),
                        "exchange_order_id": o.exchange_order_id, "reason": o.reason,
                        "created_at": iso(o.created_at), "updated_at": iso(o.updated_at)}
    if f.key is not None:
        k = f.key
        doc["key"] = {"status": k.status, "reserved_at": iso(k.created_at),
                      "updated_at": iso(k.updated_at), "attempts": k.attempts,
                      "probes": k.probes, "reason": k.reason}
        timeline.append((k.created_at, "idempotency key reserved (PENDING, fsynced) "
                         "and the order sent"))
        if k.updated_at > k.created_at:
            timeline.append((k.updated_at, f"idempotency key now {k.status}"
                             + (f" ({k.reason})" if k.reason else "")))
    history = []
    for wall, ev in f.order_events:
        history.append({"at": iso(wall / 1e9), "state": ev.state,
                        "filled_quantity": str(ev.filled_quantity),
                        "exchange_order_id": ev.exchange_order_id, "reason": ev.reason})
        timeline.append((wall / 1e9, f"order {ev.state}"
                         + (f" (exchange id {ev.exchange_order_id})"
                            if ev.exchange_order_id else "")
                         + (f" filled {ev.filled_quantity}" if ev.filled_quantity else "")
                         + (f": {ev.reason}" if ev.reason else "")))
    doc["state_history"] = history
    doc["send"] = _send(f)
    doc["fills"] = [{"trade_id": x.trade_id, "at": iso(x.ts_ms / 1000), "side": x.side,
                     "price": str(x.price), "quantity": str(x.quantity), "fee": str(x.fee),
                     "fee_asset": x.fee_asset} for x in f.fills]
    for x in f.fills:
        timeline.append((x.ts_ms / 1000, f"fill {x.trade_id}: {x.quantity} @ {x.price}, "
                         f"fee {x.fee} {x.fee_asset}"))
    if f.fills:
        doc["pnl"] = pnl_contribution(f.symbol_fills, {x.trade_id for x in f.fills})
    doc["outcome"] = _outcome(f)
    doc["timeline"] = [{"at": iso(t), "event": e} for t, e in sorted(timeline,
                                                                      key=lambda x: x[0])]
    doc["notes"] = f.notes
    return doc


def _top(levels: list[tuple[Decimal, Decimal]]) -> str:
    return f"{levels[0][0]} x {levels[0][1]}" if levels else "-"


def _send(f: WhyFacts) -> dict[str, Any] | None:
    if f.key is None:
        return None
    ack = next(((w, ev) for w, ev in f.order_events if ev.exchange_order_id), None)
    out: dict[str, Any] = {"reserved_at": iso(f.key.created_at), "ack_at": None,
                           "latency_ms": None,
                           "exchange_order_id": f.key.exchange_order_id}
    if ack is not None:
        out["ack_at"] = iso(ack[0] / 1e9)
        out["latency_ms"] = round((ack[0] / 1e9 - f.key.created_at) * 1000, 3)
        out["exchange_order_id"] = ack[1].exchange_order_id
    return out


def _outcome(f: WhyFacts) -> str:
    if f.order is not None:
        return f"order {f.order.state}"
    if f.decisions:
        d = f.decisions[-1][1]
        if d.verdict == "rejected":
            return "rejected by risk: " + ", ".join(d.reasons)
        return f"{d.verdict} by risk but never sent (no order in the DB; executor said " \
               f"{d.executor_status or 'nothing'})"
    if f.intent is not None:
        return "never decided: no risk decision recorded for this intent"
    return "not found in the DB or the recordings"


def render_text(doc: dict[str, Any]) -> str:
    if not doc["found"]:
        return f"{doc['query']}: not found in the DB or the recordings"
    lines = [f"why {doc['query']}: {doc['outcome']}",
             f"  intent {doc['intent_id'] or '-'}  client order id "
             f"{doc['client_order_id'] or '-'}  symbol {doc.get('symbol', '-')}"]
    if book := doc.get("book"):
        lines.append(f"  book ({book['source']}, {book['age_at_intent_ms']:.1f} ms old at the "
                     "intent):")
        for (bp, ba), (ap, aa) in zip(book["bids"], book["asks"], strict=False):
            lines.append(f"    {ba:>14} {bp:>12} | {ap:<12} {aa}")
    if risk := doc.get("risk"):
        lines.append(f"  risk: {risk['verdict']}")
        for r in risk["reasons"]:
            lines.append(f"    {r['code']}" + (f"  ({r['limit']} = {r['value']})"
                                                if "limit" in r else ""))
    if send := doc.get("send"):
        lat = f"{send['latency_ms']:.1f} ms" if send["latency_ms"] is not None else "no ack"
        lines.append(f"  send → ack: {lat} (exchange order id {send['exchange_order_id']})")
    if pnl := doc.get("pnl"):
        lines.append(f"  PnL contributed: net {pnl['net']} = realised {pnl['realized']} "
                     f"- fees {pnl['fees']}")
    lines.append("  timeline:")
    lines += [f"    {e['at']}  {e['event']}" for e in doc["timeline"]]
    lines += [f"  note: {n}" for n in doc["notes"]]
    return "\n".join(lines)
