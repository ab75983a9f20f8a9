"""``why``'s I/O: read one order's or intent's facts from the executor DB (read-only, the
executor owns it) and the recordings, for the pure ``actors/supervisor/why.py``."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import apsw
import msgspec

from actors.supervisor.why import KeyFacts, OrderFacts, WhyFacts
from bus.messages import (
    BookSnapshot,
    Fill,
    Intent,
    OrderEvent,
    RiskDecision,
    SymbolRules,
    packet_decoder,
)
from shared.config import Config
from shared.recording import RecordingError, read_recording, scan_segment, segment_paths

# How far before the order's reservation the intent, its decision and its book may lie.
LOOKBACK_S = 600.0
BOOK_LOOKBACK_S = 120.0

_ORDER_COLS = ("client_order_id, intent_id, symbol, side, price, quantity, filled_quantity, "
               "state, exchange_order_id, reason, created_at, updated_at, mode")
_FILL_COLS = ("trade_id, exchange_order_id, client_order_id, symbol, side, price, quantity, "
              "fee, fee_asset, ts_ms")


def _order(row: tuple[Any, ...]) -> tuple[OrderFacts, str]:
    (cid, iid, sym, side, price, qty, filled, state, oid, reason, created, updated,
     mode) = row
    return OrderFacts(cid, iid, sym, side, Decimal(price), Decimal(qty), Decimal(filled),
                      state, oid, reason, created, updated), mode


def _fill(row: tuple[Any, ...]) -> Fill:
    t, o, c, s, side, p, q, fee, fa, ts = row
    return Fill(trade_id=t, exchange_order_id=o, client_order_id=c, symbol=s, side=side,
                price=Decimal(p), quantity=Decimal(q), fee=Decimal(fee), fee_asset=fa,
                ts_ms=ts)


def read_db(path: Path, query: str, facts: WhyFacts) -> None:
    if not path.exists():
        facts.notes.append(f"no database at {path}")
        return
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.setbusytimeout(2000)
        row = conn.execute(f"SELECT {_ORDER_COLS} FROM orders WHERE client_order_id=?",
                           (query,)).fetchone()
        if row is None:
            row = conn.execute(f"SELECT {_ORDER_COLS} FROM orders WHERE intent_id=? "
                               "ORDER BY created_at DESC", (query,)).fetchone()
        if row is None and query.isdigit():
            row = conn.execute(f"SELECT {_ORDER_COLS} FROM orders WHERE exchange_order_id=?",
                               (int(query),)).fetchone()
        if row is None:
            return
        facts.order, mode = _order(row)
        cid = facts.order.client_order_id
        k = conn.execute("SELECT status, created_at, updated_at, attempts, probes, reason, "
                         "exchange_order_id FROM idempotency_keys WHERE action_type='submit' "
                         "AND key=?", (cid,)).fetchone()
        if k is not None:
            facts.key = KeyFacts(*k)
        facts.fills = [_fill(r) for r in conn.execute(
            f"SELECT {_FILL_COLS} FROM fills WHERE client_order_id=? ORDER BY ts_ms, rowid",
            (cid,))]
        facts.symbol_fills = [_fill(r) for r in conn.execute(
            f"SELECT {_FILL_COLS} FROM fills WHERE symbol=? AND mode=? ORDER BY ts_ms, rowid",
            (facts.order.symbol, mode))]
    finally:
        conn.close()


def _decoded(root: Path, topics: list[str], from_ns: int | None,
             to_ns: int | None) -> Any:
    for rec in read_recording(root, topics=topics, from_ns=from_ns, to_ns=to_ns):
        try:
            packet = packet_decoder.decode(rec.payload)
        except msgspec.ValidationError:
            continue  # a record of another schema: not ours to explain
        yield rec.recv_ns, packet.env.wall_ns, packet.body


def read_recordings(root: Path, query: str, facts: WhyFacts,
                    step: Callable[[], None] = lambda: None) -> None:
    if not root.is_dir() or not segment_paths(root):
        facts.notes.append(f"no recordings in {root}")
        return
    o = facts.order
    ids = {query} | ({o.intent_id, o.client_order_id} if o else set())
    from_ns = int((o.created_at - LOOKBACK_S) * 1e9) if o else None
    try:
        for _recv, wall, body in _decoded(root, ["intent.", "decision.", "order."], from_ns,
                                          None):
            if isinstance(body, Intent) and body.intent_id in ids:
                facts.intent = (wall, body)
            elif isinstance(body, RiskDecision) and (body.intent_id in ids
                                                     or body.client_order_id in ids):
                facts.decisions.append((wall, body))
                ids |= {body.intent_id} | ({body.client_order_id} if body.client_order_id
                                            else set())
            elif isinstance(body, OrderEvent) and (body.client_order_id in ids
                                                   or body.intent_id in ids):
                facts.order_events.append((wall, body))
        step()
        if facts.intent is not None:
            _read_book(root, facts)
        step()
    except RecordingError as exc:
        facts.notes.append(f"recordings partly unreadable: {exc}")


def _read_book(root: Path, facts: WhyFacts) -> None:
    assert facts.intent is not None
    it = facts.intent[1]
    to_ns = it.created_wall_ns + 1_000_000_000
    from_ns = it.created_wall_ns - int(BOOK_LOOKBACK_S * 1e9)
    latest: tuple[int, BookSnapshot] | None = None
    for _recv, wall, body in _decoded(root, [f"md.book.{it.symbol}", f"md.rules.{it.symbol}"],
                                      from_ns, to_ns):
        if isinstance(body, SymbolRules) and wall <= it.created_wall_ns:
            facts.rules_min_total = body.min_total
        elif isinstance(body, BookSnapshot):
            if it.book_mono_ns and body.recv_mono_ns == it.book_mono_ns:
                facts.book = (wall, body)
            elif body.recv_wall_ns <= it.created_wall_ns:
                latest = (wall, body)
    if facts.book is None and latest is not None:
        facts.book = latest
        facts.notes.append("the exact triggering book was not recorded; showing the last "
                           "book received before the intent")


def session_limits(root: Path, at_ns: int | None, cfg: Config, facts: WhyFacts) -> None:
    """The risk config the session ran with (recording header), else the current one."""
    if root.is_dir() and at_ns is not None:
        for path in reversed(segment_paths(root)):
            info = scan_segment(path)
            if info.start_ns <= at_ns and isinstance(info.meta.get("risk"), dict):
                facts.limits, facts.limits_source = dict(info.meta["risk"]), str(path.name)
                return
    facts.limits = msgspec.to_builtins(cfg.risk)
    facts.limits_source = "current config (no recording header covers the intent)"


def gather(cfg: Config, query: str, step: Callable[[], None] = lambda: None) -> WhyFacts:
    facts = WhyFacts(query=query)
    read_db(cfg.path(cfg.executor.db_path), query, facts)
    step()
    root = cfg.path(cfg.recorder.path)
    read_recordings(root, query, facts, step)
    at_ns = facts.intent[1].created_wall_ns if facts.intent else (
        int(facts.order.created_at * 1e9) if facts.order else None)
    session_limits(root, at_ns, cfg, facts)
    return facts
