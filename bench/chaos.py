"""Chaos soak: a real paper pipeline under kills, stops and exchange faults, then checks.

    .venv/bin/python bench/chaos.py [--duration 600] [--seed 1] [--keep DIR]

A real supervisor (``start --detach``) runs the whole pipeline in paper mode (bus,
exchange-sim, recorder, executor, marketdata, risk, strategy, reconciler) with a config
that trades often. For ``--duration`` seconds, at seeded random intervals, the driver:
- SIGKILLs a random actor (bus and executor included; never the exchange-sim: it is the
  exchange, and killing it would erase the very state we check against);
- SIGSTOPs one (the supervisor must notice the silent heartbeat, SIGKILL and restart it);
- injects a simulator fault with a bounded duration (accept_then_drop, http_500,
  http_429, ws_drop, ws_stall, frozen_book);
- turns the kill switch on for a few seconds (exercises the latch gate);
and, as the operator, clears a safety latch the reconciler sets after a short hold.

Then it clears the faults, turns the kill switch on (no new orders, probes and polling
continue), stops the simulator's market walk (no fill after this point), waits for every
PENDING/UNKNOWN key to resolve (executor settle window +
probe time), fetches the simulator's state, stops the pipeline via the CLI and checks:
1. orders the simulator received twice under one client order id (only outcomes that
   could have created an order count: ``accepted*`` and ``pending``): must be 0;
2. accepted intents not terminal after the settle window (DB keys PENDING/UNKNOWN; order
   rows PENDING/SUBMITTED/UNKNOWN, or OPEN/PARTIAL but not open on the exchange): 0;
3. DB vs simulator disagreement on open orders, fills and balances: 0. Balances are
   checked three ways: simulator balance == initial + the effect of every DB fill (fees
   are charged in TRY); DB positions.quantity == simulator base balance − initial; the
   executor's persisted balances table == simulator (free, locked);
4. recorder sequence gaps per (source, incarnation), excluding gaps that overlap a kill
   or stop window of that source, of the bus or of the recorder: reported (not fatal);
5. restarts and kill→READY time per actor (median, max): reported;
6. risk approvals while market data was stale or a latch was set: must be 0 (walked
   from the recording, see ``approval_violations``).
Exit status 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import apsw  # noqa: E402
import msgspec  # noqa: E402
import zmq.asyncio  # noqa: E402

from bus.auth import load_for  # noqa: E402
from bus.messages import (  # noqa: E402
    Control,
    ExecutorInfo,
    FeedStatus,
    Heartbeat,
    Intent,
    PortfolioSnapshot,
    RiskDecision,
    StatusReply,
    SupervisorCommand,
    packet_decoder,
)
from bus.transport import RequestClient, RequestFailed  # noqa: E402
from shared.config import load_config  # noqa: E402
from shared.recording import ReadReport, read_recording  # noqa: E402
from tests.helpers import Pipeline, base_config, kill_all, write_config  # noqa: E402

KILLABLE = ("bus", "recorder", "executor", "marketdata", "risk", "strategy", "reconciler")
FAULT_KINDS = ("accept_then_drop", "http_500", "http_429", "ws_drop", "ws_stall",
               "frozen_book")
SYMBOLS = ["BTCTRY", "ETHTRY", "SOLTRY"]
INITIAL = {"TRY": Decimal("1000000")}
# Transport slack: a message published this long before a decision surely reached risk
# (bus SUB path) before the decision was judged.
TOL_NS = 200_000_000
WINDOW_MARGIN_NS = 1_000_000_000  # after READY, a restarted actor is still joining
CREATABLE = ("accepted", "pending")  # outcome prefixes where an order may exist


def chaos_config(tmp: Path, seed: int) -> dict[str, Any]:
    """A pipeline that trades often: the strategy sells right after each buy
    (min_profit_bps < 0, sell the whole position), small cooldown, several open orders,
    short data-age limits so frozen books really go stale, short settle window."""
    return base_config(
        tmp,
        simulator={"seed": seed, "book_interval_ms": 100,
                   "balances": ",".join(f"{k}={v}" for k, v in INITIAL.items())},
        supervisor={"intensity_max_restarts": 60, "intensity_window_s": 60.0},
        exchange={"timeout_s": 2.0},
        marketdata={"symbols": SYMBOLS, "max_data_age_s": 3.0, "ws_stale_s": 1.0,
                    "rest_poll_interval_s": 0.5, "status_interval_s": 1.0},
        strategy={"throttle_ms": 100, "entry_notional_try": Decimal("150"),
                  "min_profit_bps": -100, "take_profit_fraction": Decimal("1"),
                  "reject_backoff_s": 0.5, "snapshot_interval_s": 1.0},
        risk={"cooldown_s": 0.3, "max_open_orders_per_symbol": 3,
              "max_orders_per_minute": 600, "max_position_try_per_symbol": Decimal("100000"),
              "max_daily_loss_try": Decimal("100000"), "snapshot_interval_s": 1.0},
        executor={"settle_window_s": 3.0, "order_poll_interval_s": 0.5,
                  "stale_order_ttl_s": 5.0, "balance_refresh_s": 1.0,
                  "probe_backoff_max_s": 2.0},
        reconciler={"interval_s": 5.0, "failure_threshold": 3},
    )


def _toml_ready(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _toml_ready(v) for k, v in doc.items()}
    if isinstance(doc, Decimal):
        return str(doc)  # the config decodes Decimal fields from strings
    return doc


# --- what happened --------------------------------------------------------------------


@dataclass
class Window:
    """An actor out of action: from the kill/stop to READY again (wall ns)."""

    actor: str
    kind: str  # "kill" | "stop"
    start_ns: int
    old_pid: int
    ready_ns: int | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.ready_ns is None else (self.ready_ns - self.start_ns) / 1e9


@dataclass
class Run:
    windows: list[Window] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    kill_switch_toggles: int = 0
    latches_cleared: int = 0
    errors: list[str] = field(default_factory=list)
    sim_state: dict[str, Any] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)
    settle_s: float = 0.0


# --- pure checks (unit-tested in tests/test_chaos.py) ------------------------------------


def duplicate_sends(received: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Client order ids the exchange received more than once with an outcome that could
    have created an order (rejections, 5xx/429 faults and 401s created nothing)."""
    counts: dict[str, int] = defaultdict(int)
    for r in received:
        outcome = str(r.get("outcome", ""))
        if r.get("newOrderClientId") and outcome.startswith(CREATABLE):
            counts[r["newOrderClientId"]] += 1
    return {cid: n for cid, n in counts.items() if n > 1}


@dataclass
class GapReport:
    streams: int = 0
    gaps: int = 0
    excluded_gaps: int = 0
    unexplained_gaps: int = 0
    records_lost: int = 0  # in unexplained mid-stream gaps
    excluded_lost: int = 0
    head_losses: int = 0  # incarnations whose first recorded seq > 1 (slow joiner)
    head_records_lost: int = 0
    details: list[str] = field(default_factory=list)


def overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def sequence_gaps(envs: Iterable[tuple[str, str, str, int, int]],
                  windows: list[tuple[str, int, int]]) -> GapReport:
    """``envs``: (source, topic, incarnation, seq, wall_ns) as recorded (a publisher
    numbers each topic on its own). ``windows``: (actor,
    start_ns, end_ns) out-of-action windows. A gap is excluded when a window of its own
    source, of the bus or of the recorder overlaps the time between the two records
    around it."""
    streams: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for source, topic, inc, seq, wall in envs:
        streams[(source, topic, inc)].append((seq, wall))
    rep = GapReport(streams=len(streams))
    for (source, topic, inc), items in streams.items():
        items.sort()
        if items[0][0] > 1:
            rep.head_losses += 1
            rep.head_records_lost += items[0][0] - 1
        for (s0, w0), (s1, w1) in zip(items, items[1:], strict=False):
            if s1 - s0 <= 1:
                continue
            rep.gaps += 1
            missing = s1 - s0 - 1
            if any(a in (source, "bus", "recorder") and overlaps(w0, w1, b0, b1)
                   for a, b0, b1 in windows):
                rep.excluded_gaps += 1
                rep.excluded_lost += missing
                continue
            rep.unexplained_gaps += 1
            rep.records_lost += missing
            rep.details.append(f"{source}/{topic}/{inc} seq {s0}->{s1} ({missing} lost, "
                               f"{(w1 - w0) / 1e6:.0f} ms)")
    return rep


@dataclass
class Evidence:
    """A fact on the bus at ``wall_ns``: symbol fresh/stale, or a latch on/off."""

    wall_ns: int
    bad: bool  # stale / latch set


def _state_at(evidence: list[Evidence], t_ns: int) -> bool | None:
    """The last evidence published at or before t (None if none)."""
    last = None
    for e in evidence:  # sorted by time; lists are small enough for a scan
        if e.wall_ns > t_ns:
            break
        last = e.bad
    return last


def violates(evidence: list[Evidence], judged_from_ns: int, published_ns: int) -> bool:
    """An approval judged no earlier than ``judged_from_ns`` (the intent's creation) and
    published at ``published_ns`` violates the gate when the last evidence published
    TOL before the judgement says bad and no good evidence appeared before the decision
    was published (risk cannot have seen a good state that did not exist yet)."""
    if _state_at(evidence, judged_from_ns - TOL_NS) is not True:
        return False
    return not any(not e.bad and judged_from_ns - TOL_NS < e.wall_ns <= published_ns
                   for e in evidence)


@dataclass
class ApprovalReport:
    approvals: int = 0
    checked: int = 0
    unverifiable: int = 0  # intent not recorded, or the recorder/bus was down
    stale_statuses: int = 0  # FeedStatus stale seen (the check had something to catch)
    latch_on_evidence: int = 0
    stale_violations: list[str] = field(default_factory=list)
    latch_violations: list[str] = field(default_factory=list)


def approval_violations(packets: list[tuple[int, str, Any]],
                        blind: list[tuple[int, int]]) -> ApprovalReport:
    """``packets``: (wall_ns, topic, Packet) in time order. Walk md.status FeedStatus per
    symbol and latch evidence (Control kill_switch_on/off, portfolio latches, hb.executor
    info) and check every approved/resized RiskDecision against them (``violates``).
    ``blind``: (start, end) windows where the recording may miss evidence (recorder or
    bus down); approvals judged in one are counted unverifiable."""
    feed: dict[str, list[Evidence]] = defaultdict(list)
    latch: list[Evidence] = []
    intents: dict[str, int] = {}
    decisions: list[tuple[int, RiskDecision]] = []
    for _wall, _topic, pkt in packets:
        body = pkt.body
        if isinstance(body, FeedStatus):
            feed[body.symbol].append(Evidence(pkt.env.wall_ns, not body.fresh))
        elif isinstance(body, Control) and body.command in ("kill_switch_on",
                                                            "kill_switch_off"):
            latch.append(Evidence(pkt.env.wall_ns, body.command == "kill_switch_on"))
        elif isinstance(body, PortfolioSnapshot):
            la = body.latches
            latch.append(Evidence(pkt.env.wall_ns, la.kill_switch or la.safety_latch))
        elif isinstance(body, Heartbeat) and body.actor == "executor":
            info = body.info
            if isinstance(info, ExecutorInfo):
                latch.append(Evidence(pkt.env.wall_ns, info.kill_switch or info.safety_latch))
        elif isinstance(body, Intent):
            intents.setdefault(body.intent_id, body.created_wall_ns)
        elif isinstance(body, RiskDecision) and body.verdict in ("approved", "resized"):
            decisions.append((pkt.env.wall_ns, body))
    for ev in (*feed.values(), latch):
        ev.sort(key=lambda e: e.wall_ns)
    rep = ApprovalReport(stale_statuses=sum(e.bad for ev in feed.values() for e in ev),
                         latch_on_evidence=sum(e.bad for e in latch))
    for published, d in decisions:
        rep.approvals += 1
        judged = intents.get(d.intent_id)
        if judged is None or any(overlaps(judged - 5 * TOL_NS, published, b0, b1)
                                 for b0, b1 in blind):
            rep.unverifiable += 1
            continue
        rep.checked += 1
        what = f"{d.symbol} {d.side} {d.intent_id} judged>={judged}"
        if violates(feed.get(d.symbol, []), judged, published) or not feed.get(d.symbol):
            rep.stale_violations.append(what)
        if violates(latch, judged, published):
            rep.latch_violations.append(what)
    return rep


def fill_effects(fills: Iterable[tuple[str, str, Decimal, Decimal, Decimal, str]]
                 ) -> dict[str, Decimal]:
    """Balance change per asset from (symbol, side, price, qty, fee, fee_asset) fills:
    the quote asset pays/receives price*qty and always pays the fee."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for symbol, side, price, qty, fee, quote in fills:
        base = symbol[: -len(quote)]
        sign = 1 if side == "buy" else -1
        out[base] += sign * qty
        out[quote] -= sign * price * qty + fee
    return out


# --- the driver ----------------------------------------------------------------------


class Driver:
    def __init__(self, pipeline: Pipeline, rng: random.Random, duration: float,
                 log: Any = print) -> None:
        self.p = pipeline
        self.cfg = load_config(pipeline.config)
        self.rng = rng
        self.duration = duration
        self.run = Run()
        self.log = log
        self.ctx = zmq.asyncio.Context()
        self.sim_url = self.cfg.rest_url
        self.busy: set[str] = set()  # actors inside a window
        self.stopped: set[int] = set()
        self.http: aiohttp.ClientSession | None = None
        self.t0 = time.monotonic()

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:6.1f}s]"

    async def command(self, command: str, **kw: Any) -> Any:
        client = RequestClient(self.ctx, self.cfg.supervisor_endpoint,
                               load_for(self.cfg.data_path, "operator"), server="supervisor",
                               timeout_s=10.0, retries=1)
        try:
            return await client.request(SupervisorCommand(command=command, **kw))
        finally:
            client.close()

    async def status(self) -> dict[str, Any]:
        reply = await self.command("status")
        assert isinstance(reply, StatusReply), reply
        return json.loads(reply.json)

    async def sim(self, method: str, path: str, body: Any = None) -> Any:
        assert self.http is not None
        async with self.http.request(method, self.sim_url + path,
                                     data=None if body is None else json.dumps(body)) as r:
            return await r.json(content_type=None)

    # --- chaos phase ---------------------------------------------------------------
    async def chaos(self) -> None:
        end = time.monotonic() + self.duration
        watchers: list[asyncio.Task[Any]] = [asyncio.create_task(self._operator(end))]
        await asyncio.sleep(min(3.0, self.duration / 10))
        while time.monotonic() < end - 3.0:
            action = self.rng.choices(["kill", "stop", "fault", "kill_switch"],
                                      weights=[4, 1, 4, 1])[0]
            try:
                if action in ("kill", "stop"):
                    task = await self._disrupt(action)
                    if task is not None:
                        watchers.append(task)
                elif action == "fault":
                    await self._fault()
                else:
                    watchers.append(asyncio.create_task(self._kill_switch_pulse()))
            except (RequestFailed, aiohttp.ClientError, OSError) as exc:
                self.run.errors.append(f"{action}: {exc}")
                self.log(f"{self.stamp()} {action} failed: {exc}")
            await asyncio.sleep(self.rng.uniform(1.5, 4.5))
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        await asyncio.gather(*watchers[1:], return_exceptions=True)
        watchers[0].cancel()

    async def _disrupt(self, kind: str) -> asyncio.Task[Any] | None:
        candidates = [a for a in KILLABLE if a not in self.busy]
        if not candidates:
            return None
        actor = self.rng.choice(candidates)
        doc = await self.status()
        pid = next(a["pid"] for a in doc["actors"] if a["name"] == actor)
        if not pid:
            return None
        w = Window(actor, kind, time.time_ns(), pid)
        os.kill(pid, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
        if kind == "stop":
            self.stopped.add(pid)
        self.busy.add(actor)
        self.run.windows.append(w)
        self.log(f"{self.stamp()} {'SIGKILL' if kind == 'kill' else 'SIGSTOP'} {actor} "
                 f"(pid {pid})")
        return asyncio.create_task(self._watch_ready(w))

    async def _watch_ready(self, w: Window) -> None:
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                try:
                    doc = await self.status()
                except RequestFailed:
                    await asyncio.sleep(0.05)
                    continue
                a = next(a for a in doc["actors"] if a["name"] == w.actor)
                if a["ready"] and a["pid"] not in (None, w.old_pid):
                    w.ready_ns = time.time_ns()
                    self.log(f"{self.stamp()}   {w.actor} READY after {w.seconds:.2f}s")
                    return
                await asyncio.sleep(0.05)
            self.run.errors.append(f"{w.actor} not READY 60 s after {w.kind}")
        finally:
            self.busy.discard(w.actor)
            self.stopped.discard(w.old_pid)

    async def _fault(self) -> None:
        kind = self.rng.choice(FAULT_KINDS)
        d = round(self.rng.uniform(2.0, 6.0), 2)
        spec: dict[str, Any] = {"kind": kind, "duration_s": d}
        if kind == "accept_then_drop":
            spec.update(path="/api/v1/order", method="POST", count=self.rng.randint(1, 2),
                        mode=self.rng.choice(["hold", "close"]), hold_s=3)
        elif kind == "http_500":
            spec.update(path="/api/v1", probability=0.3, status=self.rng.choice([500, 503]))
        elif kind == "http_429":
            spec.update(path="/api/v1/order", method="POST", count=3, retry_after=1)
        elif kind == "frozen_book":
            spec.update(symbols=[self.rng.choice(SYMBOLS)], duration_s=d + 2.0)
        await self.sim("POST", "/sim/faults", spec)
        self.run.faults.append(spec)
        self.log(f"{self.stamp()} fault {json.dumps(spec)}")

    async def _kill_switch_pulse(self) -> None:
        await self.command("kill_switch", value=True, reason="chaos pulse")
        self.run.kill_switch_toggles += 1
        self.log(f"{self.stamp()} kill switch ON")
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        await self.command("kill_switch", value=False, reason="chaos pulse")
        self.log(f"{self.stamp()} kill switch OFF")

    async def _operator(self, end: float) -> None:
        """Clear a safety latch the reconciler set (faults can cause one), after a hold."""
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            try:
                doc = await self.status()
                if doc["latch"].get("safety_latch"):
                    self.log(f"{self.stamp()} safety latch SET: {doc['latch'].get('reason')}")
                    await asyncio.sleep(2.0)
                    await self.command("latch_clear", reason="chaos operator")
                    self.run.latches_cleared += 1
                    self.log(f"{self.stamp()} safety latch cleared")
            except (RequestFailed, KeyError) as exc:
                self.run.errors.append(f"operator: {exc}")

    # --- settle ------------------------------------------------------------------------
    async def settle(self) -> None:
        t = time.monotonic()
        await self.sim("DELETE", "/sim/faults")
        for pid in list(self.stopped):  # a stopped actor the supervisor has not killed yet
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        await self.command("kill_switch", value=True, reason="chaos settle")
        # The market stands still from here: a resting order filled a moment before the
        # final comparison would be a fill the executor had no time to import yet (a race
        # in the check, not a loss), so every fill happens before the settle window.
        await self.sim("POST", "/sim/market", {"random_walk": False})
        ex = self.cfg.executor
        floor = ex.settle_window_s + ex.probe_backoff_max_s + 3 * ex.order_poll_interval_s \
            + 2 * ex.balance_refresh_s
        deadline = t + floor + 40.0
        quiet = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            try:
                doc = await self.status()
            except RequestFailed:
                continue
            idem = doc.get("idempotency", {})
            ok = (all(a["ready"] for a in doc["actors"]) and idem.get("pending") == 0
                  and idem.get("unknown") == 0 and not doc["latch"].get("safety_latch"))
            if doc["latch"].get("safety_latch"):
                await self.command("latch_clear", reason="chaos settle")
            quiet = quiet + 1 if ok else 0
            if quiet >= 4 and time.monotonic() - t >= floor:
                break
        self.run.settle_s = time.monotonic() - t
        self.run.final_status = await self.status()
        self.run.sim_state = await self.sim("GET", "/sim/state")
        self.run.received = await self.sim("GET", "/sim/received-orders")

    async def main(self) -> None:
        async with aiohttp.ClientSession() as http:
            self.http = http
            await self.chaos()
            await self.settle()
        self.ctx.destroy(linger=0)


# --- checks after stop ---------------------------------------------------------------


def _dec(x: Any) -> Decimal:
    return abs(Decimal(str(x)))


def check_exchange(run: Run, db_path: Path) -> dict[str, Any]:
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    keys = conn.execute("SELECT key, status FROM idempotency_keys WHERE action_type='submit' "
                        "AND status IN ('PENDING','UNKNOWN')").fetchall()
    orders = conn.execute("SELECT client_order_id, state, exchange_order_id, filled_quantity "
                          "FROM orders WHERE mode='paper'").fetchall()
    fills = conn.execute("SELECT trade_id, exchange_order_id, symbol, side, price, quantity, "
                         "fee, fee_asset FROM fills WHERE mode='paper'").fetchall()
    positions = {s: Decimal(q) for s, q in conn.execute(
        "SELECT symbol, quantity FROM positions WHERE mode='paper'")}
    balances = {a: (Decimal(f), Decimal(lk)) for a, f, lk in conn.execute(
        "SELECT asset, free, locked FROM balances WHERE mode='paper'")}
    key_counts = dict(conn.execute(
        "SELECT status, count(*) FROM idempotency_keys GROUP BY status").fetchall())
    conn.close()

    sim = run.sim_state
    sim_open = {o["id"]: o for o in sim["open_orders"]}
    db_open = {oid: (cid, st) for cid, st, oid, _ in orders if st in ("OPEN", "PARTIAL")}
    unresolved = [f"key {k} {s}" for k, s in keys]
    unresolved += [f"order {cid} {st}" for cid, st, oid, _ in orders
                   if st in ("PENDING", "SUBMITTED", "UNKNOWN")
                   or (st in ("OPEN", "PARTIAL") and oid not in sim_open)]
    open_diff = [f"db-only open {oid}" for oid in db_open if oid not in sim_open]
    open_diff += [f"sim-only open {oid} {o['orderClientId']}" for oid, o in sim_open.items()
                  if oid not in db_open]

    sim_fills = {str(f["id"]): f for f in sim["fills"]}
    db_fills = {r[0]: r for r in fills}
    fill_diff = [f"sim-only fill {t}" for t in sim_fills if t not in db_fills]
    fill_diff += [f"db-only fill {t}" for t in db_fills if t not in sim_fills]
    for tid, (_, oid, sym, side, price, qty, fee, _fa) in db_fills.items():
        f = sim_fills.get(tid)
        if f is None:
            continue
        if (f["orderId"] != oid or f["symbol"] != sym or f["orderType"] != side
                or _dec(f["price"]) != Decimal(price) or _dec(f["amount"]) != Decimal(qty)
                or _dec(f["fee"]) + _dec(f.get("tax", 0)) != Decimal(fee)):
            fill_diff.append(f"fill {tid} differs: db={db_fills[tid]} sim={f}")

    effects = fill_effects((sym, side, Decimal(p), Decimal(q), Decimal(fee), fa)
                           for _, _, sym, side, p, q, fee, fa in fills)
    sim_bal = {a: Decimal(b["balance"]) for a, b in sim["balances"].items()}
    balance_diff = []
    for asset in sorted(set(sim_bal) | set(effects) | set(INITIAL)):
        expected = INITIAL.get(asset, Decimal(0)) + effects.get(asset, Decimal(0))
        if expected != sim_bal.get(asset, Decimal(0)):
            balance_diff.append(f"{asset}: initial+DB fills={expected} sim={sim_bal.get(asset)}")
    for sym, qty in positions.items():
        base = sym[:-3]
        if qty != sim_bal.get(base, Decimal(0)) - INITIAL.get(base, Decimal(0)):
            balance_diff.append(f"{sym}: DB position {qty} sim {base} {sim_bal.get(base)}")
    for asset, b in sim["balances"].items():
        mine = balances.get(asset)
        theirs = (Decimal(b["free"]), Decimal(b["locked"]))
        if theirs != (0, 0) and mine != theirs:
            balance_diff.append(f"{asset}: DB balances table {mine} sim {theirs}")
    return {"unresolved": unresolved, "open_diff": open_diff, "fill_diff": fill_diff,
            "balance_diff": balance_diff, "db_orders": len(orders), "db_fills": len(fills),
            "key_counts": key_counts, "sim_fills": len(sim_fills),
            "sim_open": len(sim_open)}


def read_packets(rec_dir: Path) -> tuple[list[tuple[int, str, Any]], int, dict[str, ReadReport]]:
    reports: dict[str, ReadReport] = {}
    out, bad = [], 0
    for r in read_recording(rec_dir, reports=reports):
        try:
            out.append((r.recv_ns, r.topic, packet_decoder.decode(r.payload)))
        except (msgspec.DecodeError, msgspec.ValidationError):
            bad += 1
    out.sort(key=lambda x: x[2].env.wall_ns)
    return out, bad, reports


def summarize_windows(run: Run) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in ("kill", "stop"):
        by: dict[str, list[float]] = defaultdict(list)
        for w in run.windows:
            if w.kind == kind and w.seconds is not None:
                by[w.actor].append(w.seconds)
        for actor, xs in sorted(by.items()):
            out[f"{kind}:{actor}"] = {"n": len(xs), "median_s": statistics.median(xs),
                                      "max_s": max(xs)}
    return out


def analyse(run: Run, tmp: Path) -> tuple[list[str], list[str]]:
    """Returns (printed lines, failed invariants)."""
    lines: list[str] = []
    failed: list[str] = []

    def figure(name: str, value: Any, must_be_zero: bool = False, detail: Iterable[str] = ()
               ) -> None:
        mark = ""
        if must_be_zero:
            ok = value == 0
            mark = "  OK" if ok else "  FAIL"
            if not ok:
                failed.append(name)
        lines.append(f"{name}: {value}{mark}")
        lines.extend(f"    {d}" for d in list(detail)[:10])

    dups = duplicate_sends(run.received)
    outcomes: dict[str, int] = defaultdict(int)
    for r in run.received:
        outcomes[str(r["outcome"]).split(":")[0] if r["outcome"].startswith("rejected")
                 else r["outcome"]] += 1
    lines.append(f"orders received by the simulator: {len(run.received)} "
                 f"{dict(sorted(outcomes.items()))}")
    figure("orders sent twice with one client order id", len(dups), True,
           [f"{c} x{n}" for c, n in dups.items()])

    ex = check_exchange(run, tmp / "data" / "btcbot.db")
    lines.append(f"DB: {ex['db_orders']} orders, {ex['db_fills']} fills, keys "
                 f"{ex['key_counts']}; sim: {ex['sim_fills']} fills, {ex['sim_open']} open")
    figure("accepted intents not terminal after settle", len(ex["unresolved"]), True,
           ex["unresolved"])
    figure("DB vs sim disagreement: open orders", len(ex["open_diff"]), True, ex["open_diff"])
    figure("DB vs sim disagreement: fills", len(ex["fill_diff"]), True, ex["fill_diff"])
    figure("DB vs sim disagreement: balances/positions", len(ex["balance_diff"]), True,
           ex["balance_diff"])

    packets, bad, reports = read_packets(tmp / "recordings")
    torn = sum(1 for r in reports.values() if r.torn_tail)
    lines.append(f"recording: {len(packets)} records in {len(reports)} segments, "
                 f"{bad} undecodable, {torn} torn tails")
    now = time.time_ns()
    windows = [(w.actor, w.start_ns, (w.ready_ns or now) + WINDOW_MARGIN_NS)
               for w in run.windows]
    gaps = sequence_gaps(((p.env.source, t, p.env.incarnation, p.env.seq, p.env.wall_ns)
                          for _, t, p in packets), windows)
    figure("recorder sequence gaps outside kill windows", gaps.unexplained_gaps,
           detail=gaps.details)
    lines.append(f"records lost outside kill windows: {gaps.records_lost} (inside windows: "
                 f"{gaps.excluded_gaps} gaps, {gaps.excluded_lost} records; incarnation "
                 f"heads missed (slow joiner): {gaps.head_losses} streams, "
                 f"{gaps.head_records_lost} records; {gaps.streams} streams)")

    restarts = {a["name"]: a["restarts"] for a in run.final_status.get("actors", [])}
    lines.append(f"disruptions: {sum(w.kind == 'kill' for w in run.windows)} SIGKILL, "
                 f"{sum(w.kind == 'stop' for w in run.windows)} SIGSTOP, "
                 f"{len(run.faults)} faults, {run.kill_switch_toggles} kill-switch pulses, "
                 f"{run.latches_cleared} safety latches cleared")
    lines.append(f"restarts performed (supervisor): {sum(restarts.values())} {restarts}")
    for key, s in summarize_windows(run).items():
        lines.append(f"  {key} -> READY: n={s['n']} median {s['median_s']:.2f}s "
                     f"max {s['max_s']:.2f}s")
    not_back = [f"{w.actor} {w.kind}" for w in run.windows if w.ready_ns is None]
    figure("actors not READY again after a disruption", len(not_back), True, not_back)

    blind = [(w.start_ns, (w.ready_ns or now) + WINDOW_MARGIN_NS) for w in run.windows
             if w.actor in ("bus", "recorder")]
    appr = approval_violations([(p.env.wall_ns, t, p) for _, t, p in packets], blind)
    lines.append(f"approvals: {appr.approvals} ({appr.checked} checked, "
                 f"{appr.unverifiable} unverifiable: intent unrecorded or recorder/bus down); "
                 f"evidence: {appr.stale_statuses} stale FeedStatus, "
                 f"{appr.latch_on_evidence} latch-on messages")
    figure("approvals while market data stale", len(appr.stale_violations), True,
           appr.stale_violations)
    figure("approvals while a latch was set", len(appr.latch_violations), True,
           appr.latch_violations)
    if run.errors:
        lines.append(f"driver errors ({len(run.errors)}): {run.errors[:5]}")
    return lines, failed


def soak(tmp: Path, duration: float, seed: int, log: Any = print) -> tuple[list[str], list[str],
                                                                           Run]:
    doc = chaos_config(tmp, seed)
    pipeline = Pipeline(write_config(tmp, _toml_ready(doc)))
    rng = random.Random(seed)
    t = time.monotonic()
    pipeline.start()
    log(f"pipeline READY in {time.monotonic() - t:.1f}s; chaos for {duration:.0f}s "
        f"(seed {seed}, dir {tmp})")
    driver = Driver(pipeline, rng, duration, log)
    try:
        asyncio.run(driver.main())
    finally:
        r = pipeline.cli("stop", timeout=90)
        if r.returncode != 0:
            driver.run.errors.append(f"stop exited {r.returncode}: {r.stderr.strip()}")
        kill_all(pipeline.config, doc["simulator"]["port"])
    log(f"settled in {driver.run.settle_s:.1f}s; stopped")
    lines, failed = analyse(driver.run, tmp)
    return lines, failed, driver.run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="run in this dir and keep it")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        tmp = args.keep
    else:
        tmp = Path(tempfile.mkdtemp(prefix="btcbot-chaos-"))
    lines, failed, _ = soak(tmp, args.duration, args.seed)
    print("\n".join(lines))
    print(f"RESULT: {'FAIL ' + ', '.join(failed) if failed else 'all invariants hold'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
