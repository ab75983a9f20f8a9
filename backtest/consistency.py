"""Consistency check: does the backtest's fill model reproduce a recorded paper session?

A paper session's recording holds the market data the simulator published, the orders
the session placed (``order.*`` events) and the fills the simulator gave them
(``fill.*``). This replays *the session's own orders* (not the strategy: a strategy in a
backtest decides on every book from the first, while the live one started when its
pipeline was ready and saw portfolio snapshots with a lag, so the two drift apart
quickly) through the backtest's fill model (fills.py) at the moment the executor
announced each order, against the book recorded then, cancels where the session
cancelled, and compares: per order the filled quantity and the average price, and the
session's PnL by the one definition (shared/pnl.py), realised and fees.

The stated tolerance (``Tolerance``): every order's filled quantity equal, its average
fill price within 10 bps, and total realised PnL and fees within 0.5 % of the traded
notional; the simulator's book moves between its published snapshots (every
``simulator.book_interval_ms``) and an order reaches it a few milliseconds after the
book the backtest matches against, which is what these margins allow for.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from backtest.fills import Matcher, SimFill, SimOrder
from bus.messages import TERMINAL_ORDER_STATES, BookSnapshot, Fill, OrderEvent, packet_decoder
from shared import pnl
from shared.recording import read_recording

ZERO = Decimal(0)


@dataclass(frozen=True)
class Tolerance:
    price_bps: Decimal = Decimal(10)
    pnl_fraction_of_turnover: Decimal = Decimal("0.005")


@dataclass
class Comparison:
    orders: int = 0
    live_fills: int = 0
    backtest_fills: int = 0
    mismatches: list[str] = field(default_factory=list)
    live: pnl.Pnl = pnl.Pnl(ZERO, ZERO, ZERO, None)
    backtest: pnl.Pnl = pnl.Pnl(ZERO, ZERO, ZERO, None)
    turnover: Decimal = ZERO

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _totals(fills: list[tuple[str, str, Decimal, Decimal, Decimal]]) -> pnl.Pnl:
    positions: dict[str, pnl.PositionState] = {}
    for sym, side, price, qty, fee in fills:
        positions[sym] = pnl.apply_fill(positions.get(sym, pnl.PositionState()), side, price,
                                        qty, fee)
    return pnl.total(pnl.position_pnl(p.quantity, p.avg_cost, p.realized_pnl, p.fees, None)
                     for p in positions.values())


def compare(recording: str | os.PathLike[str], maker_fee: Decimal, taker_fee: Decimal,
            tol: Tolerance = Tolerance()) -> Comparison:
    matcher = Matcher(maker_fee, taker_fee)
    books: dict[str, BookSnapshot] = {}
    placed: dict[str, SimOrder] = {}
    sim_fills: list[SimFill] = []
    live_fills: list[Fill] = []
    for rec in read_recording(recording, ("md.book.", "order.", "fill.")):
        try:
            packet = packet_decoder.decode(rec.payload)
        except msgspec.DecodeError:
            continue
        body, clock = packet.body, packet.env.wall_ns
        if isinstance(body, BookSnapshot):
            if body.bids and body.asks:
                books[body.symbol] = body
                sim_fills += matcher.on_book(body, clock)
        elif isinstance(body, OrderEvent):
            cid = body.client_order_id
            if cid not in placed and body.state not in ("PENDING", "REJECTED", "FAILED"):
                order = SimOrder(cid, body.intent_id, body.symbol, body.side, body.price,
                                 body.quantity, clock, 2**62)
                placed[cid] = order
                sim_fills += matcher.submit(order, books.get(body.symbol), clock)
            elif body.state in TERMINAL_ORDER_STATES and body.state != "FILLED":
                matcher.cancel(cid)
        elif isinstance(body, Fill):
            live_fills.append(body)
    out = Comparison(orders=len(placed), live_fills=len(live_fills),
                     backtest_fills=len(sim_fills))
    live_by: dict[str, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for f in live_fills:
        live_by[f.client_order_id].append((f.price, f.quantity))
    bt_by: dict[str, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for f in sim_fills:
        bt_by[f.cid].append((f.price, f.quantity))
    for cid in sorted(set(live_by) | set(bt_by)):
        lq = sum((q for _, q in live_by[cid]), ZERO)
        bq = sum((q for _, q in bt_by[cid]), ZERO)
        if lq != bq:
            out.mismatches.append(f"{cid}: filled {lq} live, {bq} in the backtest")
            continue
        if lq == 0:
            continue
        lp = sum((p * q for p, q in live_by[cid]), ZERO) / lq
        bp = sum((p * q for p, q in bt_by[cid]), ZERO) / bq
        if abs(bp - lp) / lp * 10_000 > tol.price_bps:
            out.mismatches.append(f"{cid}: average price {lp} live, {bp} in the backtest")
    out.live = _totals([(f.symbol, f.side, f.price, f.quantity, f.fee) for f in live_fills])
    out.backtest = _totals([(f.symbol, f.side, f.price, f.quantity, f.fee) for f in sim_fills])
    out.turnover = sum((f.price * f.quantity for f in live_fills), ZERO)
    limit = out.turnover * tol.pnl_fraction_of_turnover
    for name in ("realized", "fees"):
        a, b = getattr(out.live, name), getattr(out.backtest, name)
        if abs(a - b) > limit:
            out.mismatches.append(f"{name}: {a} live, {b} in the backtest (limit {limit})")
    return out
