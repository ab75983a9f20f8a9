"""Pure decisions for following and reconciling orders against the exchange.

Given what the DB believes and what the exchange lists, say what differs and what the
fix is. The actor does the I/O (fetching, persisting, publishing); nothing here does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from actors.executor.db import OrderRow
from shared.btcturk.models import ExchangeOrder

OPEN_STATES = frozenset({"OPEN", "PARTIAL"})


def is_ours(client_order_id: str | None, prefix: str) -> bool:
    return bool(client_order_id) and client_order_id.startswith(prefix + "-")  # type: ignore[union-attr]


def order_state(status: str, amount: Decimal, left: Decimal) -> str:
    """BTCTurk status → our OrderState. An unrecognised status is UNKNOWN (fail closed:
    it is reported as drift rather than guessed)."""
    filled = amount - left
    match status:
        case "Untouched":
            return "OPEN" if filled <= 0 else "PARTIAL"
        case "Partial":
            return "PARTIAL"
        case "Closed":
            return "FILLED" if left <= 0 else "CANCELED"
        case "Canceled":
            return "CANCELED"
    return "UNKNOWN"


def exchange_view(o: ExchangeOrder) -> tuple[str, Decimal]:
    return order_state(o.status, o.amount, o.left_amount), o.filled


@dataclass(frozen=True, slots=True)
class Drift:
    kind: Literal["orphan", "update", "missing"]
    client_order_id: str
    detail: str
    exchange_order: ExchangeOrder | None = None
    new_state: str = ""
    new_filled: Decimal = Decimal(0)


def diff_open_orders(
    db_open: Iterable[OrderRow],
    db_by_cid: Mapping[str, OrderRow],
    exch_open: Iterable[ExchangeOrder],
    prefix: str,
    *,
    in_resolution: frozenset[str] = frozenset(),
) -> list[Drift]:
    """Differences between DB and exchange *open* orders.

    - ``orphan``: listed on the exchange with our prefix, no row at all → adopt.
    - ``update``: the row exists but its state/filled differ (includes a row we thought
      terminal that is open again, e.g. a FAILED key whose order showed up late).
    - ``missing``: the row is open (with an exchange id) but the exchange does not list it:
      it ended; the actor fetches its final state.
    Keys still being sent or probed (``in_resolution``) are left to the prober.
    """
    out: list[Drift] = []
    listed: set[str] = set()
    for o in exch_open:
        cid = o.client_order_id or ""
        if not is_ours(cid, prefix):
            continue
        listed.add(cid)
        if cid in in_resolution:
            continue
        state, filled = exchange_view(o)
        row = db_by_cid.get(cid)
        if row is None:
            out.append(Drift("orphan", cid, f"open on exchange as {o.id}, no row", o, state,
                             filled))
        elif row.state != state or row.filled_quantity != filled or row.exchange_order_id != o.id:
            out.append(Drift("update", cid, f"{row.state}/{row.filled_quantity} -> "
                             f"{state}/{filled}", o, state, filled))
    for row in db_open:
        if row.client_order_id in listed or row.client_order_id in in_resolution:
            continue
        if row.exchange_order_id is None or row.state not in OPEN_STATES:
            continue
        out.append(Drift("missing", row.client_order_id,
                         f"{row.state} in DB, not open on exchange"))
    return out


def ttl_expired(rows: Iterable[OrderRow], now: float, default_ttl_s: float) -> list[OrderRow]:
    """Open orders older than their TTL (the request's ttl_s, or the default)."""
    out = []
    for r in rows:
        if r.state not in OPEN_STATES or r.exchange_order_id is None:
            continue
        ttl = r.ttl_s if r.ttl_s > 0 else default_ttl_s
        if now - r.created_at > ttl:
            out.append(r)
    return out


def balance_drift(
    totals: Mapping[str, Decimal], positions: Mapping[str, Decimal],
    baseline: Mapping[str, Decimal],
) -> dict[str, Decimal]:
    """Per base asset: exchange total - position from fills - baseline (non-zero = drift).
    ``baseline`` is the same difference at the first comparison (holdings from before
    our fills); assets without a baseline are not judged."""
    out = {}
    for asset, base in baseline.items():
        diff = totals.get(asset, Decimal(0)) - positions.get(asset, Decimal(0)) - base
        if diff != 0:
            out[asset] = diff
    return out




@dataclass(frozen=True, slots=True)
class DriftRun:
    """An asset's drift: for how many settled reconciles in a row it was seen, since
    when (the first of them)."""

    count: int
    since: float


def drift_runs(runs: Mapping[str, DriftRun], drift: Mapping[str, Decimal], *,
               settled: bool, now: float) -> dict[str, DriftRun]:
    """Per asset, the run of settled reconciles in a row that saw it drift.

    A reconcile reads the venue's trades, then its balances: a fill that lands between
    the two is in the balances and not yet in our fills, and shows as drift. When the
    bot trades all the time most reconciles meet such a fill, often of the same size
    (a position bought and sold whole), and counting them latched busy sessions
    falsely. So a reconcile that saw drift reads the trades again after the balances:
    if that imports anything, a fill landed during it and its drift proves nothing
    (``settled`` false): the runs stand as they were, neither counted nor ended. A
    settled reconcile counts each drifting asset (from ``now`` for a new run) and ends
    the run of every other."""
    if not settled:
        return dict(runs)
    return {asset: DriftRun(runs[asset].count + 1, runs[asset].since) if asset in runs
            else DriftRun(1, now) for asset in drift}


def drift_latches(runs: Mapping[str, DriftRun], *, now: float, reconciles: int,
                  min_s: float) -> list[str]:
    """The assets whose drift latches the bot: seen on ``reconciles`` settled reconciles
    in a row *and* standing for ``min_s``. Reconciles come in bursts (a bus gap triggers
    one), and an exchange whose trade list lags its balances by seconds must not latch
    the bot on three reconciles within those seconds; money no fill explains stays."""
    return sorted(a for a, r in runs.items()
                  if r.count >= reconciles and now - r.since >= min_s)

