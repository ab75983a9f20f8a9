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

Two checks live here:

- ``compare`` (order level): the fill model alone. It replays the session's own orders,
  so it says whether fills.py prices and sizes the fills the simulator gave, whatever
  the strategy did.
- ``compare_session`` (strategy level, ``btcbot-supervisor backtest --consistency``): the
  strategy and risk decide for themselves (session.py: the backtest engine on the
  session's message stream, with the pipeline's recorded answer times), the fill model
  fills their orders, and the result is compared field by field with the session:
  intents, orders, fills, each order's fills, realised PnL, fees, net PnL and the final
  positions. ``SessionTolerance`` states the margins and why.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from actors.strategy.api import Strategy
from backtest.engine import Fees
from backtest.fills import Matcher, SimFill, SimOrder
from backtest.session import Session, SessionBacktest, read_session
from bus.messages import TERMINAL_ORDER_STATES, BookSnapshot, Fill, OrderEvent, packet_decoder
from shared import pnl
from shared.config import Config
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


# --- strategy level ---------------------------------------------------------------------


@dataclass(frozen=True)
class SessionTolerance:
    """How close a strategy-level backtest must come to its session, and why not
    closer. Measured on the tests' paper sessions (profit_aware: taker fills, and
    inventory_mm: maker fills, requotes, cooldown rejections) the match was exact: every
    intent at the same clock, every order with the same fills at the same prices.

    The margins are for what the recording cannot show: (1) the simulator's book moves
    on its own clock (``simulator.book_interval_ms``) and an order reaches it a few
    milliseconds after the book it was decided on; when a move falls in between and
    its book is recorded only after the exchange's answer, the simulator matched
    against a book the backtest has not seen; (2) the simulator publishes a book after
    its resting orders took from it, so a level our order emptied live shows less
    quantity (or is gone) in the book the backtest fills that order on; (3) an order
    the exchange refused live (balance, its own rules) is approved by risk's pure
    decision here. Each such order changes the position, and the decisions after it on
    that symbol may differ too, hence a fraction of orders rather than one.
    """

    order_fraction: Decimal = Decimal("0.1")  # orders (and intents) allowed to differ
    price_bps: Decimal = Decimal(10)  # a matched order's average fill price
    pnl_fraction_of_turnover: Decimal = Decimal("0.005")  # realised and net PnL
    fee_fraction: Decimal = Decimal("0.01")  # fees, of the session's fees (same fills:
    # the same fees to 1e-8 TRY each; a wrong fee schedule is off by its whole ratio)


@dataclass(frozen=True)
class FieldCheck:
    name: str
    live: str
    backtest: str
    limit: str
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "live": self.live, "backtest": self.backtest,
                "limit": self.limit, "ok": self.ok}


@dataclass
class SessionComparison:
    fields: list[FieldCheck] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # which orders/intents differ
    notes: list[str] = field(default_factory=list)
    orders_level: Comparison | None = None  # the fill model alone, on the same session

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.fields)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "fields": [f.as_dict() for f in self.fields],
                               "details": self.details, "notes": self.notes}
        if self.orders_level is not None:
            out["fill_model"] = {"ok": self.orders_level.ok,
                                 "orders": self.orders_level.orders,
                                 "mismatches": self.orders_level.mismatches}
        return out

    def render(self) -> str:
        width = max((len(f.name) for f in self.fields), default=10)
        lines = [f"strategy-level consistency: {'PASS' if self.ok else 'FAIL'}",
                 f"{'field':{width}}  {'live':>22}  {'backtest':>22}  limit"]
        for f in self.fields:
            lines.append(f"{f.name:{width}}  {f.live:>22}  {f.backtest:>22}  {f.limit}"
                         f"{'' if f.ok else '  <- FAIL'}")
        if self.orders_level is not None:
            lines.append("fill model alone (the session's own orders): "
                         + ("PASS" if self.orders_level.ok
                            else "FAIL: " + "; ".join(self.orders_level.mismatches[:5])))
        lines += [f"  {d}" for d in self.details[:20]]
        if len(self.details) > 20:
            lines.append(f"  ... {len(self.details) - 20} more")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _avg(rows: list[tuple[Decimal, Decimal]]) -> tuple[Decimal, Decimal | None]:
    qty = sum((q for _, q in rows), ZERO)
    return qty, (sum((p * q for p, q in rows), ZERO) / qty if qty else None)


def _f(x: Decimal) -> str:
    """A figure for the report: to 1e-8 (TRY and quantities), no exponent."""
    q = x.quantize(Decimal("1e-8")).normalize()
    return format(q if q != 0 else ZERO, "f")


def _allowed(fraction: Decimal, n: int) -> int:
    """Of ``n`` things, how many may differ: the fraction, rounded up (so one race in a
    short session is allowed)."""
    return int((fraction * n).to_integral_value(rounding="ROUND_CEILING"))


def compare_session(recording: str | os.PathLike[str], cfg: Config, strategy: Strategy,
                    fees: Fees, tol: SessionTolerance = SessionTolerance(),
                    session: Session | None = None) -> SessionComparison:
    """Run the strategy and risk over the session's market data with the session's
    timing (session.py) and compare what they did with what the session did.
    Raises ``session.SessionError`` when the recording cannot be checked."""
    s = session or read_session(recording)
    bt = SessionBacktest(cfg, strategy, s, fees=fees)
    result = bt.run_session(recording)
    out = SessionComparison()
    if s.restarted_ns:
        out.notes.append("the session's strategy restarted during the recording: its "
                         "second run starts from a state this check does not rebuild")

    # Intents: paired by symbol, side and message clock (session.py).
    made = result.intents
    unpaired_live = len(s.intents) - (made - len(bt.unmatched))
    allowed = _allowed(tol.order_fraction, len(s.intents))
    out.fields.append(FieldCheck(
        "intents", str(len(s.intents)), str(made),
        f"<= {allowed} unpaired each way",
        len(bt.unmatched) <= allowed and unpaired_live <= allowed))
    for i in bt.unmatched[:10]:
        out.details.append(f"backtest intent the session did not make: {i.symbol} {i.side} "
                           f"{i.quantity:.8g}@{i.price} ({i.reason}) at clock "
                           f"{i.created_wall_ns}")

    # Orders: the session's that reached the exchange, ours that reached the fill model.
    live_orders = sorted(c for c in s.answered_at)
    ours = {o.cid: o for o in result.orders}
    live_of = bt.paired
    paired = {live_of[c] for c in ours if c in live_of and live_of[c] in s.answered_at}
    allowed_orders = _allowed(tol.order_fraction, len(live_orders))
    out.fields.append(FieldCheck(
        "orders", str(len(live_orders)), str(len(ours)),
        f"<= {allowed_orders} unpaired each way",
        len(live_orders) - len(paired) <= allowed_orders
        and len(ours) - len(paired) <= allowed_orders))

    live_by: dict[str, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for f in s.fills:
        live_by[f.client_order_id].append((f.price, f.quantity))
    bt_by: dict[str, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for sf in result.fills:
        bt_by[live_of.get(sf.cid, "backtest:" + sf.cid)].append((sf.price, sf.quantity))
    out.fields.append(FieldCheck(
        "fills", str(len(s.fills)), str(len(result.fills)),
        f"within {allowed_orders}",
        abs(len(s.fills) - len(result.fills)) <= allowed_orders))

    differing = 0
    for cid in sorted(set(live_by) | set(bt_by)):
        lq, lp = _avg(live_by.get(cid, []))
        bq, bp = _avg(bt_by.get(cid, []))
        if lq != bq:
            differing += 1
            out.details.append(f"order {cid}: filled {_f(lq)} live, {_f(bq)} in the "
                               "backtest")
        elif lp is not None and bp is not None and (
                abs(bp - lp) / lp * 10_000 > tol.price_bps):
            differing += 1
            out.details.append(f"order {cid}: average price {lp} live, {bp} in the backtest")
    out.fields.append(FieldCheck(
        "orders with other fills", "-", str(differing),
        f"<= {allowed_orders} (quantity equal, price within {tol.price_bps} bps)",
        differing <= allowed_orders))

    # Money, by the one definition, marked at the session's last mids.
    marks = {sym: bt._mid(sym) for sym in bt.host.rules}
    live_pos: dict[str, pnl.PositionState] = {
        sym: pnl.PositionState(q, c, r, fee) for sym, q, c, r, fee in s.positions}
    for f in s.fills:
        live_pos[f.symbol] = pnl.apply_fill(live_pos.get(f.symbol, pnl.PositionState()),
                                            f.side, f.price, f.quantity, f.fee)

    def money(positions: dict[str, pnl.PositionState]) -> pnl.Pnl:
        return pnl.total(pnl.position_pnl(p.quantity, p.avg_cost, p.realized_pnl, p.fees,
                                          marks.get(sym)) for sym, p in positions.items())

    live, ours_pnl = money(live_pos), money(bt.positions)
    turnover = sum((f.price * f.quantity for f in s.fills), ZERO)
    bt_turnover = sum((f.price * f.quantity for f in result.fills), ZERO)
    limit = (turnover * tol.pnl_fraction_of_turnover).quantize(Decimal("1e-8"))
    out.fields.append(FieldCheck(
        "turnover", _f(turnover), _f(bt_turnover),
        f"within {tol.order_fraction * 100:.0f} %",
        abs(bt_turnover - turnover) <= turnover * tol.order_fraction))
    for name in ("realized", "net"):
        a, b = getattr(live, name), getattr(ours_pnl, name)
        out.fields.append(FieldCheck(name, _f(a), _f(b), f"within {_f(limit)} TRY "
                                     f"({tol.pnl_fraction_of_turnover * 100:.1f} % of turnover)",
                                     abs(a - b) <= limit))
    fee_limit = (live.fees * tol.fee_fraction + Decimal("1e-8") * len(s.fills)).quantize(
        Decimal("1e-8"))
    out.fields.append(FieldCheck("fees", _f(live.fees), _f(ours_pnl.fees),
                                 f"within {_f(fee_limit)} TRY "
                                 f"({tol.fee_fraction * 100:.0f} % of the session's)",
                                 abs(live.fees - ours_pnl.fees) <= fee_limit))
    traded: dict[str, Decimal] = defaultdict(Decimal)
    for f in s.fills:
        traded[f.symbol] += f.quantity
    for sym in sorted(set(live_pos) | set(bt.positions)):
        a = live_pos.get(sym, pnl.PositionState()).quantity
        b = bt.positions.get(sym, pnl.PositionState()).quantity
        room = traded[sym] * tol.order_fraction
        out.fields.append(FieldCheck(
            f"position {sym}", _f(a), _f(b),
            f"within {_f(room)} ({tol.order_fraction * 100:.0f} % of its traded quantity)",
            abs(a - b) <= room))
    out.orders_level = compare(recording, fees.maker, fees.taker)
    return out
