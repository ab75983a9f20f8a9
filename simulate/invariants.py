"""The invariants, checked while the world runs and at its end.

At every order that reaches the venue (the exchange is about to execute it):
- ``durable_before_send``: its idempotency key is committed in the executor's DB (read
  through a connection of our own, which sees only committed data);
- ``no_duplicate_send``: its client order id was never sent before in a way that may have
  executed (accepted, 5xx, answer lost); a re-send after a provable non-send (429,
  refused) is allowed;
- ``gates_respected``: no latch (kill switch, safety latch, pause) was on in the DB for
  longer than ``LATCH_GRACE_S`` (an order already on its way when the latch was set);
- ``caps_respected``: the executor's hard caps (notional, symbols, open orders per symbol,
  orders per minute) hold at the venue;
- ``limits_respected``: risk's per-order limits (minimum notional, maximum notional per
  order when set) hold at the venue. (Position and daily-loss limits are judged by risk
  on its own, possibly lagging view; they are not re-checked here.)

At every order risk forwards to the executor (first attempt): ``fresh_data`` — the
symbol's last book on the bus is younger than ``max_data_age_s`` (+ one poll), and so is
its content: the market it shows (a WebSocket book's change set, a REST book's
timestamp) stopped being the venue's no longer ago than that (``BookVersions``). The
second half catches old data republished as new (a stamp renewed, a cached book
re-sent), which the publication time alone cannot see.

Every simulated second: the trading state the supervisor's pure function derives from
what the actors report is never TRADING while a latch is on in the DB, a symbol's data
is stale (by the bus's truth), or the exchange has been in an outage for longer than the
executor's detection bound; every 10 s, ``intents_settle``: no key stays PENDING/UNKNOWN
longer than ``PENDING_BOUND_S``, and ``baseline_true``: the balance baseline the executor
persisted (holdings from outside our fills, the reference of its balance-drift latch) is
the truth: every base asset's starting balance, since every other unit came by a fill.

At the end, after the settle time: ``db_matches_venue`` (orders and fills) and
``pnl_equals_equity`` (net PnL by shared/pnl.py from the DB's fills equals the change of
the account's equity at the mark, computed from the exchange's balances).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import apsw
import msgspec

from actors.executor.accounting import FillFact, replay
from actors.executor.caps import WINDOW_S as CAP_WINDOW_S
from actors.executor.outage import HALT as OUTAGE_HALT
from actors.executor.recovery import order_state
from actors.supervisor.trading_state import ActorView, TradingInputs, derive_trading_state
from bus.messages import SubmitOrder
from shared import pnl
from shared.fsm import State
from simulate.clock import EPOCH_NS

if TYPE_CHECKING:
    from simulate.world import World


class _BookHead(msgspec.Struct, tag="BookSnapshot", kw_only=True):
    """What the checks read of a published ``BookSnapshot``: its levels are skipped,
    not decoded into Decimals (every book would be decoded once more here)."""

    symbol: str
    source: str
    exchange_ts_ms: int
    change_set: int | None = None


class _StatusHead(msgspec.Struct, tag="FeedStatus", kw_only=True):
    symbol: str
    fresh: bool


class _Head(msgspec.Struct, array_like=True):
    env: msgspec.Raw
    body: _BookHead | _StatusHead


_head_decoder = msgspec.msgpack.Decoder(_Head)


def _head(payload: bytes) -> _BookHead | _StatusHead | None:
    """The body's head when it is a book or a feed status, else None (the producers
    are our actors: what they publish decodes)."""
    try:
        return _head_decoder.decode(payload).body
    except msgspec.ValidationError:
        return None


LATCH_GRACE_S = 1.0
PENDING_BOUND_S = 900.0
OUTAGE_DETECT_S = 15.0
PNL_TOLERANCE = Decimal("0.000001")
UP_STATES = {str(State.READY), str(State.DEGRADED_RECOVERY), str(State.PAUSED_DATA)}


class Violation(Exception):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


class BookVersions:
    """When did the venue's book of a pair move past a version? Fed after every market
    tick with the book's change set (what a WebSocket book carries) and timestamp (what
    a REST book carries), both increasing; asked for the time the version a published
    book shows was superseded. Changes between ticks (our own orders) are not recorded,
    so the answer is the next tick's time: never earlier than the truth (no false
    alarm). A venue restart continues from a saved walk whose change sets repeat: the
    record starts again."""

    KEEP = 1200  # versions per pair (20 minutes of ticks): older ones count as the first

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], list[int]] = {}
        self._since: dict[str, list[float]] = {}

    def moved(self, symbol: str, change_set: int, ts_ms: int, at: float) -> None:
        cs = self._keys.setdefault((symbol, "ws"), [])
        ts = self._keys.setdefault((symbol, "rest"), [])
        since = self._since.setdefault(symbol, [])
        if cs and (change_set <= cs[-1] or ts_ms < ts[-1]):
            return  # not newer (a frozen pair's tick is skipped, not recorded)
        cs.append(change_set)
        ts.append(ts_ms)
        since.append(at)
        if len(since) > 2 * self.KEEP:
            del cs[:self.KEEP], ts[:self.KEEP], since[:self.KEEP]

    def restarted(self) -> None:
        self._keys.clear()
        self._since.clear()

    def superseded_at(self, symbol: str, source: str, key: int) -> float | None:
        """When the version ``key`` (a change set for ``ws``, a timestamp for ``rest``)
        stopped being the book, or None while it is still the newest recorded."""
        keys = self._keys.get((symbol, source))
        if not keys:
            return None
        i = bisect_right(keys, key)
        return self._since[symbol][i] if i < len(keys) else None


class Invariants:
    def __init__(self, world: World) -> None:
        self.w = world
        self.cfg = world.cfg
        self._db: apsw.Connection | None = None
        self.last_book: dict[str, float] = {}  # symbol -> virtual time of its last book
        # symbol -> (source, version) of its last book on the bus (see BookVersions)
        self.last_version: dict[str, tuple[str, int]] = {}
        self.versions = BookVersions()
        self.feed: dict[str, bool] = {}  # symbol -> last FeedStatus said fresh
        self.maybe_sent: set[str] = set()  # cids a send of which may have executed
        # Reservation times (virtual, from the DB row) of the orders that reached the
        # venue, for the executor incarnation that reserved them (its per-minute cap is
        # in memory: a restart starts a new window, as documented).
        self.reserved_at: deque[float] = deque()
        self._reserved_by = 0
        self._counted: set[str] = set()
        self.vanished: set[str] = set()
        self.outage_since: float | None = None
        self._ticks = 0
        world.net.on_publish = self._on_publish
        world.net.on_request = self._on_request
        world.exchange.on_submit = self._on_submit
        world.exchange.on_submitted = self._on_submitted
        world.exchange.on_book = lambda s, cs, ts: self.versions.moved(
            s, cs, ts, world.loop.time())

    # --- the executor's DB, as it is on disk --------------------------------------------
    def db(self) -> apsw.Connection | None:
        if self._db is None:
            path = self.cfg.path(self.cfg.executor.db_path)
            if not path.exists():
                return None
            self._db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        return self._db

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = self.db()
        return [] if db is None else list(db.execute(sql, args))

    def _latches_on(self, older_than: float) -> list[str]:
        cutoff = self.w._wall_ms() / 1000 - older_than
        return [name for name, value, at in self.rows(
            "SELECT name, value, updated_at FROM latches") if value and at < cutoff]

    # --- hooks ---------------------------------------------------------------------------
    def _on_publish(self, source: str, topic: str, payload: bytes) -> None:
        if topic.startswith("md.book."):
            self.last_book[topic[8:]] = self.w.loop.time()
            book = _head(payload)
            if isinstance(book, _BookHead):
                if book.source == "ws" and book.change_set is not None:
                    self.last_version[book.symbol] = ("ws", book.change_set)
                elif book.source == "rest":
                    self.last_version[book.symbol] = ("rest", book.exchange_ts_ms)
        elif topic == "md.status":
            body = _head(payload)
            if isinstance(body, _StatusHead):
                self.feed[body.symbol] = body.fresh

    def _stale_truth(self, slack: float) -> list[str]:
        now = self.w.loop.time()
        limit = self.cfg.marketdata.max_data_age_s + slack
        return [s for s in self.cfg.marketdata.symbols
                if now - self.last_book.get(s, -1e9) > limit]

    def _on_request(self, sender: str, endpoint: str, body: Any, attempt: int) -> None:
        if sender == "risk" and attempt == 0 and isinstance(body, SubmitOrder):
            symbol = body.order.symbol
            slack = self.cfg.marketdata.rest_poll_interval_s
            limit = self.cfg.marketdata.max_data_age_s + slack
            now = self.w.loop.time()
            cid = body.order.client_order_id
            if symbol in self._stale_truth(slack):
                age = now - self.last_book.get(symbol, -1e9)
                raise_later(self.w, Violation(
                    "fresh_data", f"risk sent {cid} on {symbol} whose last book is "
                    f"{age:.1f}s old (max_data_age_s {self.cfg.marketdata.max_data_age_s})"))
            elif (version := self.last_version.get(symbol)) is not None:
                gone = self.versions.superseded_at(symbol, *version)
                if gone is not None and now - gone > limit:
                    raise_later(self.w, Violation(
                        "fresh_data", f"risk sent {cid} on {symbol} whose last book (source "
                        f"{version[0]}, version {version[1]}) shows a market the venue left "
                        f"{now - gone:.1f}s ago (max_data_age_s "
                        f"{self.cfg.marketdata.max_data_age_s})"))

    def _on_submit(self, fields: dict[str, Any]) -> None:
        cid = str(fields.get("newOrderClientId", ""))
        w = self.w
        if cid in self.maybe_sent:
            raise_later(w, Violation("no_duplicate_send",
                                     f"{cid} reached the venue again after a send that may "
                                     "have executed"))
        if not self.rows("SELECT status FROM idempotency_keys WHERE action_type='submit' "
                          "AND key=?", cid):
            raise_later(w, Violation("durable_before_send",
                                     f"{cid} reached the venue with no committed key"))
        if on := self._latches_on(LATCH_GRACE_S):
            raise_later(w, Violation("gates_respected",
                                     f"{cid} reached the venue while {', '.join(on)} was on"))
        ex = self.cfg.executor
        price = Decimal(str(fields.get("price", "0")))
        qty = Decimal(str(fields.get("quantity", "0")))
        symbol = str(fields.get("pairSymbol", "")).replace("_", "").upper()
        allowed = set(ex.allowed_symbols or self.cfg.marketdata.symbols)
        problems = []
        if ex.max_order_notional and price * qty > ex.max_order_notional:
            problems.append(f"notional {price * qty} > {ex.max_order_notional}")
        if symbol not in allowed:
            problems.append(f"symbol {symbol} not allowed")
        open_now = sum(1 for o in w.exchange.engine.open_orders.get(symbol, []))
        if ex.max_open_orders_per_symbol and open_now >= ex.max_open_orders_per_symbol:
            problems.append(f"{open_now} open orders on {symbol} already")
        if ex.max_orders_per_minute and (n := self._reserved_within_minute(cid)) >= \
                ex.max_orders_per_minute:
            problems.append(f"{n} other orders reserved in the minute before it")
        if problems:
            raise_later(w, Violation("caps_respected", f"{cid}: {'; '.join(problems)}"))
        rk = self.cfg.risk
        limits = []
        if price * qty < rk.min_order_notional_try:
            limits.append(f"notional {price * qty} < risk.min_order_notional_try "
                          f"{rk.min_order_notional_try}")
        if rk.max_notional_per_order_try > 0 and price * qty > rk.max_notional_per_order_try:
            limits.append(f"notional {price * qty} > risk.max_notional_per_order_try "
                          f"{rk.max_notional_per_order_try}")
        if limits:
            raise_later(w, Violation("limits_respected", f"{cid}: {'; '.join(limits)}"))

    def _reserved_within_minute(self, cid: str) -> int:
        """Orders that reached the venue reserved less than 60 s before ``cid`` (by the
        executor's reservation time, the cap's own measure: counting arrivals instead
        finds a false excess when an older order's send took longer than this one's)."""
        slot = self.w.slots["executor"]
        row = self.rows("SELECT created_at FROM orders WHERE client_order_id=?", cid)
        if not row or slot.clock is None:
            return 0  # no row: durable_before_send says so
        if slot.incarnations != self._reserved_by:
            self._reserved_by = slot.incarnations
            self.reserved_at.clear()
            self._counted.clear()
        if cid in self._counted:
            return 0  # a re-send (after a provable non-send): one reservation
        self._counted.add(cid)
        # The row's wall time on the executor's clock, back to virtual time (its skew
        # changes only at a fault's start and end, not within a send).
        at = row[0][0] - EPOCH_NS / 1e9 - slot.clock.skew_ns / 1e9
        while self.reserved_at and at - self.reserved_at[0] >= CAP_WINDOW_S - 0.001:
            self.reserved_at.popleft()
        n = sum(1 for r in self.reserved_at if at - r < CAP_WINDOW_S - 0.001)
        self.reserved_at.append(at)
        return n

    def _on_submitted(self, fields: dict[str, Any], status: int, lost: bool) -> None:
        cid = str(fields.get("newOrderClientId", ""))
        if status == 200 or status >= 500 or lost:
            self.maybe_sent.add(cid)
        if status == 200:
            self.w.result.orders += 1

    # --- every simulated second --------------------------------------------------------
    def periodic(self) -> None:
        w = self.w
        now = w.loop.time()
        if w.exchange.faults.outage_until > now or w.exchange.down:
            self.outage_since = self.outage_since if self.outage_since is not None else now
        else:
            self.outage_since = None
        state = derive_trading_state(self.trading_inputs())
        if state.trading:
            w.result.trading_seconds += 1
            why = []
            if on := self._latches_on(LATCH_GRACE_S):
                why.append(f"latched ({', '.join(on)})")
            if stale := self._stale_truth(2 * self.cfg.supervisor.heartbeat_interval_s + 1):
                why.append(f"data stale ({', '.join(stale)})")
            if self.outage_since is not None and now - self.outage_since > OUTAGE_DETECT_S:
                why.append(f"exchange down for {now - self.outage_since:.0f}s")
            if why:
                raise Violation("trading_state", "TRADING while " + "; ".join(why))
        self._ticks += 1
        if self._ticks % 10 == 0:
            cutoff = w._wall_ms() / 1000 - PENDING_BOUND_S
            stuck = self.rows("SELECT key, status FROM idempotency_keys WHERE status IN "
                               "('PENDING','UNKNOWN') AND created_at < ?", cutoff)
            if stuck:
                raise Violation("intents_settle", f"{len(stuck)} keys unsettled for over "
                                f"{PENDING_BOUND_S:.0f}s, e.g. {stuck[0]}")
            self._baseline_true()

    def _baseline_true(self) -> None:
        """A baseline taken while a fill was on its way is wrong for good: every later
        reconcile then sees drift that is not there, and latches."""
        rows = self.rows("SELECT value FROM meta WHERE key = ?",
                         f"balance_baseline:{self.cfg.mode}")
        if not rows:
            return
        start = self.w.start_balances
        wrong = {a: v for a, v in json.loads(rows[0][0]).items()
                 if Decimal(v) != start.get(a, Decimal(0))}
        if wrong:
            raise Violation("baseline_true", f"balance baseline {wrong}: the holdings from "
                            f"outside our fills are {start}")

    def trading_inputs(self) -> TradingInputs:
        """What the supervisor would hear from the actors' heartbeats."""
        views = []
        for name, slot in self.w.slots.items():
            a = slot.actor
            state = "STOPPED" if a is None else str(a.fsm.state)
            up = a is not None and a.ready and state in UP_STATES
            views.append(ActorView(name=name, state=state, up=up))
        ex = self.w.slots["executor"].actor
        latches: dict[str, bool | None] = {"kill_switch": None, "safety_latch": None,
                                           "paused": None}
        reachable: bool | None = None
        halts: list[str] = []
        if ex is not None and ex.ready:
            gates = ex.gates  # type: ignore[attr-defined]
            latches = {n: gates.latch(n) for n in latches}
            reachable = OUTAGE_HALT not in gates.halts
            halts = list(gates.halts)
        stale = tuple(s for s in self.cfg.marketdata.symbols if not self.feed.get(s, False))
        return TradingInputs(
            mode="paper", actors=tuple(views), kill_switch=latches["kill_switch"],
            safety_latch=latches["safety_latch"], paused=latches["paused"],
            exchange_reachable=reachable, submits_failing=bool(halts),
            submit_reason=",".join(halts), stale_symbols=stale,
            feed_heard=bool(self.feed), recorder_required=False)

    # --- the end -------------------------------------------------------------------------
    def final(self) -> None:
        w = self.w
        engine = w.exchange.engine
        prefix = self.cfg.executor.client_id_prefix
        ours = {o.client_id: o for o in engine.orders.values() if o.client_id.startswith(prefix)}
        rows = {r[0]: r for r in self.rows(
            "SELECT client_order_id, state, filled_quantity, exchange_order_id FROM orders")}
        problems = []
        for cid, o in sorted(ours.items()):
            row = rows.get(cid)
            if row is None:
                problems.append(f"{cid} on the venue, not in the DB")
                continue
            state = order_state(o.status, o.amount, o.left)
            filled = o.amount - o.left
            if (row[1], Decimal(row[2]), row[3]) != (state, filled, o.id):
                problems.append(f"{cid}: DB {row[1]} {row[2]} #{row[3]}, venue {state} "
                                f"{filled} #{o.id}")
        for cid, row in sorted(rows.items()):
            if cid in ours or cid in self.vanished:
                continue
            if row[1] not in ("FAILED", "REJECTED") or Decimal(row[2]) != 0:
                problems.append(f"{cid}: DB {row[1]} {row[2]}, unknown to the venue")
        venue_fills = {str(f.id) for f in engine.fills if f.client_id.startswith(prefix)}
        db_fills = {r[0] for r in self.rows("SELECT trade_id FROM fills")}
        if venue_fills != db_fills:
            problems.append(f"fills: {len(venue_fills - db_fills)} on the venue only, "
                            f"{len(db_fills - venue_fills)} in the DB only")
        w.result.fills = len(db_fills)
        if problems:
            raise Violation("db_matches_venue", "; ".join(problems[:5]))
        self._pnl()

    def _pnl(self) -> None:
        w = self.w
        facts = [FillFact(sym, side, Decimal(price), Decimal(qty), Decimal(fee))
                 for sym, side, price, qty, fee in self.rows(
                     "SELECT symbol, side, price, quantity, fee FROM fills ORDER BY ts_ms, "
                     "trade_id")]
        positions = replay(facts)
        marks = {s: w.exchange.mark(s) for s in w.exchange.market.books}
        net = pnl.total(pnl.position_pnl(p.quantity, p.avg_cost, p.realized_pnl, p.fees,
                                         marks[s]) for s, p in positions.items()).net
        acct = w.exchange.engine.account
        def equity(free: dict[str, Decimal], locked: dict[str, Decimal]) -> Decimal:
            total = free.get("TRY", Decimal(0)) + locked.get("TRY", Decimal(0))
            for s, book in w.exchange.market.books.items():
                base = book.spec.numerator
                total += (free.get(base, Decimal(0)) + locked.get(base, Decimal(0))) * marks[s]
            return total
        start = sum((v for k, v in w.exchange.engine.initial_balances.items() if k == "TRY"),
                    Decimal(0))
        change = equity(acct.free, acct.locked) - start
        if abs(net - change) > PNL_TOLERANCE:
            raise Violation("pnl_equals_equity", f"net PnL {net} != equity change {change}")

    def record(self, v: Violation) -> None:
        w = self.w
        w.result.violations.append({
            "invariant": v.invariant, "detail": v.detail,
            "sim_time_s": round(w.loop.time(), 3), "last_events": w.trace.last(20),
        })


def raise_later(world: World, v: Violation) -> None:
    """A violation seen inside a callback of the system under test: recorded, and the run
    stops at once (the system's own exception handling must not swallow it)."""
    if world.result.violations:
        return
    world.inv.record(v)
    world.abort()

