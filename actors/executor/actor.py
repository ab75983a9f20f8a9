"""The executor actor: the only owner of the DB and of the authenticated exchange client.

Order flow (exactly once in effect, see idempotency.py for the key state machine):
SubmitOrder → validate → duplicate? (answer the key's state, never touch the exchange)
→ recovering / gates? (refuse, nothing reserved) → reserve key PENDING + order row in one
durable transaction → reply "accepted" → send in a background task → COMMITTED / FAILED
/ UNKNOWN (probed until found, or FAILED after the settle window).

Decisions where the brief was silent (also in the report):
- A RetryableError (429, connection refused, connect timeout) proves the request had no
  effect, so the key stays PENDING and the same client order id is re-sent after a
  backoff (at most ``max_send_attempts`` sends), then FAILED.
- A key is never re-sent once it may have reached the exchange, and never re-armed once
  FAILED: "safe to decide anew" means a new decision (a new intent id), not a re-send.
- Gates are re-checked right before every exchange *write*. Reads (probes, polling,
  reconcile) are allowed under kill switch / safety latch / pause, because resolving
  and observing is exactly what should continue; they are blocked only by dry-run and by
  an unarmed live mode. Cancels are allowed under kill switch / latch / pause (they
  reduce risk) but not under safe_mode. A submit blocked at send time leaves its key
  FAILED with reason ``blocked:<gate>``; a submit refused at request time reserves
  nothing (key_status "NONE") so the same intent can be tried once the gate opens.
- Order status and fills are followed by REST polling (open orders + user trades every
  ``order_poll_interval_s``, a final status by order id), woken by the private WebSocket
  in paper/live (``executor.private_ws``): an event (441 match, 423 trade, 451 insert,
  452 delete) for one of our orders (our client-id prefix, or an exchange id we know)
  triggers an immediate REST refresh of that order and of user trades, so state changes
  and fills keep one code path (fills deduplicated by trade id); an insert of an order
  the send's answer already recorded as OPEN refreshes nothing. Refreshes are coalesced:
  one in flight, events meanwhile make exactly one more. While the socket is trusted
  (connected, logged in, not caught missing an event: see privatews.py) the periodic poll
  stretches to ``ws_poll_interval_s``; otherwise it is back to ``order_poll_interval_s``
  at once. Our socket has no public channels, so it pings every ``WS_HEARTBEAT_S``: a
  healthy quiet socket then never looks stalled, a dead one does within
  ``WS_STALL_TIMEOUT_S``. A socket error never stops the executor (the client reconnects).
- Market orders are refused ("market_orders_unsupported"): risk sends limit orders and
  a market BUY's quantity semantics (quote amount) would need rounding rules here.
- Keys remember the mode they were created in; a key from another exchange (paper vs
  live) cannot be resolved here, so the executor stays in DEGRADED_RECOVERY (fail closed)
  and says so; dry-run keys were never sent anywhere and resolve to FAILED at once.

Mirror mode (``executor.replay_mirror``, only for ``replay --verify``, only in dry-run):
the replayed recording already carries the recorded executor's order, fill and
portfolio messages, so this executor adds none of its own (they would double-count
open orders and positions) and simulates no fills. It answers ``SnapshotQuery`` with
the latest recorded ``portfolio`` it has seen (before any: an empty snapshot marked
``recovering``, which is what a fresh dry-run executor answers too, so strategy and risk
start as they did in the recorded session). After a recorded order/fill event and
before the portfolio the recorded executor published in reaction (at most ~0.5 s
later), the latest recorded snapshot is known to be behind: a query then waits up to
``MIRROR_WAIT_S`` for the next one, as the live executor's answer would have reflected
the change. ``SubmitOrder`` is reserved in the temp DB and answered ``accepted``
(a repeated key answers ``duplicate``); nothing is ever sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.executor import idempotency as idem
from actors.executor.accounting import PositionState, apply_fill
from actors.executor.crashpoints import CrashHook
from actors.executor.db import (
    NON_TERMINAL_ORDER_STATES,
    ExecutorDB,
    FillRow,
    LockHeld,
    OrderRow,
    acquire_lock,
)
from actors.executor.dryrun import crossing_fill
from actors.executor.idempotency import Key, KeyStatus, Phase
from actors.executor.privatews import PrivateWsWatch
from actors.executor.recovery import (
    Drift,
    balance_drift,
    diff_open_orders,
    exchange_view,
    is_ours,
    ttl_expired,
)
from actors.executor.tradewindow import TradeWindow
from actors.runtime import EXIT_CONFIG, EXIT_LOCKED, Actor, FatalActorError, main_for
from bus.messages import (
    TERMINAL_ORDER_STATES,
    Ack,
    Balance,
    BookSnapshot,
    CancelOrder,
    CommandRequest,
    Control,
    ExecutorCommand,
    ExecutorInfo,
    Fill,
    KeyCounts,
    Latches,
    Msg,
    OpenOrder,
    OrderAck,
    OrderEvent,
    OrderRequest,
    Packet,
    Ping,
    PortfolioSnapshot,
    Position,
    ReconcileQuery,
    ReconcileResult,
    SetLatch,
    SnapshotQuery,
    SubmitOrder,
)
from bus.transport import CommandError
from shared.btcturk.client import BtcTurkClient
from shared.btcturk.errors import BtcTurkError, RejectedError, RetryableError
from shared.btcturk.models import ExchangeOrder, UserTrade
from shared.btcturk.ws import (
    BtcTurkWebSocket,
    OrderDelete,
    OrderInsert,
    OrderMatch,
    WsConnected,
    WsDisconnected,
)
from shared.config import Config
from shared.fsm import State
from shared.ids import client_order_id

SUBMIT, CANCEL = "submit", "cancel"
# Mirror mode: how long a snapshot query waits for the recorded portfolio that follows a
# recorded order/fill event (the recorded executor published it within ~0.5 s); below
# the strategy's and risk's snapshot request timeouts (2 s).
MIRROR_WAIT_S = 1.2
KeyId = tuple[str, str]
# The private socket: it carries no public channel, so transport pings are what keeps a
# healthy quiet socket from looking stalled (pongs count as frames for the stall timer).
WS_STALL_TIMEOUT_S = 10.0
WS_HEARTBEAT_S = 4.0
# A poll-found change of our order with no private event this close to it is "missed".
WS_MISSED_GRACE_S = 2.0
WS_LOGIN_WAIT_S = 5.0  # connected this long without a login answer: said once
CHECKPOINT_INTERVAL_S = 2.0  # WAL checkpoints, on a worker thread (_checkpoint_loop)


class ExecutorActor(Actor):
    name = "executor"
    serves_commands = True
    commands = ExecutorCommand

    def __init__(self, cfg: Config) -> None:
        self.db_path = cfg.path(cfg.executor.db_path)
        # The lock comes first: before the command socket is bound (binding unlinks the
        # ipc path, which would steal the running executor's endpoint).
        try:
            self._lock_fd = acquire_lock(self.db_path)
        except LockHeld as exc:
            raise FatalActorError(str(exc), EXIT_LOCKED) from None
        super().__init__(cfg)
        self.mode = cfg.mode
        self.dry_run = cfg.mode == "dry-run"
        self.mirror = cfg.executor.replay_mirror
        if self.mirror and not self.dry_run:
            raise FatalActorError(
                f"executor.replay_mirror = true needs mode dry-run (mode is {cfg.mode}): "
                "it is only for replay --verify", EXIT_CONFIG)
        if self.mirror:
            self.subscriptions = ("portfolio", "order.", "fill.")  # type: ignore[misc]
        else:
            self.subscriptions = ("md.book.",) if self.dry_run else ()  # type: ignore[misc]
        self._mirror_snap: PortfolioSnapshot | None = None
        self._mirror_behind = False
        self._mirror_fresh = asyncio.Event()
        ex = cfg.executor
        self.policy = idem.Policy(ex.settle_window_s, ex.probe_backoff_initial_s,
                                  ex.probe_backoff_max_s, ex.max_send_attempts)
        self.instant_policy = idem.Policy(0.0, 0.0, 0.0, ex.max_send_attempts)
        self.crash = CrashHook.from_env()
        self.db: ExecutorDB | None = None
        self.client: BtcTurkClient | None = None
        self.keys: dict[KeyId, Key] = {}  # non-terminal keys and what we know of their sends
        self.key_modes: dict[KeyId, str] = {}
        self.latches: dict[str, tuple[bool, str]] = {}
        self.recovering = True
        self.orphan_scan_done = False
        self.unresolvable: set[KeyId] = set()
        self._dirty = True
        self._last_balance_fetch = 0.0
        self.trade_window = TradeWindow()
        self._balance_baseline: dict[str, Decimal] = {}
        self._balance_suspect: dict[str, Decimal] = {}
        self._dry_seq = 0
        self._logged_once: set[str] = set()
        # Private WebSocket (paper/live): see the module docstring and privatews.py.
        self.ws: BtcTurkWebSocket | None = None
        self.ws_watch = PrivateWsWatch(ex.order_poll_interval_s, ex.ws_poll_interval_s,
                                       WS_MISSED_GRACE_S)
        self._ws_enabled = False
        self._ws_conn: tuple[int, float] = (0, 0.0)  # (connection number, when)
        self._ws_login_failed_seen = 0
        self._ws_login_warned = 0  # connection number last warned about
        self._refresh_cids: set[str] = set()
        self._refresh_wanted = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------
    async def setup(self) -> None:
        self.db = ExecutorDB(self.db_path, synchronous=self.cfg.executor.db_synchronous)
        self.latches = self.db.latches()
        if self.mirror:
            # Nothing to recover: nothing is ever sent, and no loop may publish.
            self.recovering = False
            logger.info("executor: replay mirror mode (no exchange, no fills, no events)")
            return
        now = time.time()
        for row in self.db.keys_with_status("PENDING", "UNKNOWN"):
            k = (row.action_type, row.key)
            self.keys[k] = idem.loaded(KeyStatus(row.status), row.attempts, row.reason,
                                       row.exchange_order_id, row.settle_from, now)
            self.key_modes[k] = row.mode
        if self.keys:
            logger.warning("executor: {} unresolved keys from a previous run; resolving "
                           "before accepting orders", len(self.keys))
        if not self.dry_run:
            self.client = self._make_client()
        else:
            self.orphan_scan_done = True
            self._dry_seq = int(time.time() * 1000)
        self.fsm.to(State.DEGRADED_RECOVERY, "startup recovery")
        self.spawn(self._probe_loop(), "probe")
        self.spawn(self._portfolio_loop(), "portfolio")
        self.spawn(self._prune_loop(), "prune")
        self.spawn(self._checkpoint_loop(), "checkpoint")
        if not self.dry_run:
            self.spawn(self._poll_loop(), "poll")
            self._start_private_ws()

    def _make_client(self) -> BtcTurkClient:
        key, secret = self.cfg.credentials()
        return BtcTurkClient(self.cfg.rest_url, key or None, secret or None,
                             timeout_s=self.cfg.exchange.timeout_s,
                             rate_limits=None if self.cfg.executor.client_rate_limit else False)

    async def teardown(self) -> None:
        if self.ws is not None:
            self.ws.stop()
        if self.client is not None:
            await self.client.close()
        if self.db is not None:
            db, self.db = self.db, None  # the final heartbeat must not touch a closed DB
            db.close()

    # --- gates -------------------------------------------------------------------------
    def latch(self, name: str) -> bool:
        return self.latches.get(name, (False, ""))[0]

    def kill_switch_on(self) -> bool:
        return self.cfg.gates.kill_switch or self.latch("kill_switch")

    def read_block(self) -> str | None:
        if self.dry_run:
            return "dry_run"
        if self.mode == "live" and self.cfg.live_arming_problems():
            return "live_not_armed"
        return None

    def write_block(self, action: str) -> str | None:
        """Why an exchange write may not happen now (None: allowed). Checked again right
        before every write, whatever was checked when the request came in."""
        if self.mode == "live" and (problems := self.cfg.live_arming_problems()):
            return "live_not_armed:" + "; ".join(problems)
        if self.cfg.gates.safe_mode:
            return "safe_mode"
        if action == SUBMIT:
            if self.kill_switch_on():
                return "kill_switch"
            if self.latch("safety_latch"):
                return "safety_latch"
            if self.latch("paused"):
                return "paused"
        return None

    def _sync_fsm(self, trigger: str) -> None:
        if self.recovering:
            target = State.DEGRADED_RECOVERY
        elif self.kill_switch_on() or self.latch("safety_latch") or self.latch("paused"):
            target = State.PAUSED_SAFETY
        else:
            target = State.READY
        if self.fsm.state != target and self.fsm.can(target):
            self.fsm.to(target, trigger)

    # --- commands ----------------------------------------------------------------------
    async def handle_command(self, request: CommandRequest[ExecutorCommand]) -> Msg | None:
        body = request.body
        if self.mirror:
            return await self._mirror_command(body)
        match body:
            case SubmitOrder(order=order):
                return await self._on_submit(order)
            case CancelOrder():
                return self._on_cancel(body.client_order_id, body.reason or "requested")
            case SnapshotQuery():
                return self.snapshot()
            case ReconcileQuery(symbol=symbol):
                return await self._reconcile(symbol)
            case SetLatch():
                return self._on_set_latch(body.latch, body.value, body.reason)
            case Ping():
                return None
        raise CommandError(f"executor does not handle {type(body).__name__}")

    # --- replay mirror ------------------------------------------------------------------
    async def _mirror_command(self, body: Msg) -> Msg | None:
        match body:
            case SubmitOrder(order=order):
                return self._mirror_submit(order)
            case SnapshotQuery():
                return await self._mirror_snapshot()
            case Ping():
                return None
        raise CommandError(f"executor (replay mirror) does not handle {type(body).__name__}")

    def _mirror_submit(self, o: OrderRequest) -> OrderAck:
        assert self.db is not None
        if (refusal := self._refuse_or_dedupe(o)) is not None:
            return refusal
        cid = o.client_order_id
        now = time.time()
        row = OrderRow(cid, o.intent_id, self.mode, o.symbol, o.side, o.order_type, o.price,
                       o.quantity, Decimal(0), "PENDING", None, o.ttl_s, o.reason, False, now, now)
        # Reserved (so a repeat is a duplicate) but never tracked for sending: the key
        # stays PENDING in this throw-away DB.
        self.db.reserve_order(row, retention_s=self.cfg.executor.key_retention_s)
        self.counters["accepted"] += 1
        return OrderAck(client_order_id=cid, status="accepted", key_status="PENDING")

    async def _mirror_snapshot(self) -> PortfolioSnapshot:
        if self._mirror_behind:
            self.counters["mirror_waits"] += 1
            try:
                await asyncio.wait_for(self._mirror_fresh.wait(), MIRROR_WAIT_S)
            except TimeoutError:
                self.counters["mirror_wait_timeouts"] += 1
        if self._mirror_snap is None:
            return PortfolioSnapshot(positions=[], balances=[], open_orders=[],
                                     latches=Latches(), keys=KeyCounts(), recovering=True)
        return self._mirror_snap

    def _mirror_message(self, body: Any) -> None:
        if isinstance(body, PortfolioSnapshot):
            self._mirror_snap = body
            self._mirror_behind = False
            self._mirror_fresh.set()
            self.counters["mirror_snapshots"] += 1
        elif isinstance(body, OrderEvent | Fill):
            # The recorded executor published a portfolio after this: until it comes,
            # the latest one is behind.
            self._mirror_behind = True
            self._mirror_fresh = asyncio.Event()

    def _reject(self, cid: str, reason: str, key_status: str = "NONE") -> OrderAck:
        self.counters["rejected"] += 1
        return OrderAck(client_order_id=cid, status="rejected", key_status=key_status,
                        reason=reason)

    def _validate(self, o: OrderRequest) -> str | None:
        try:
            expected = client_order_id(self.cfg.executor.client_id_prefix, o.intent_id)
        except ValueError as exc:
            return f"bad_client_id_prefix:{exc}"
        if o.client_order_id != expected:
            return f"client_order_id_mismatch: expected {expected}"
        if o.order_type != "limit":
            return "market_orders_unsupported"
        if o.price <= 0 or o.quantity <= 0:
            return "non_positive_price_or_quantity"
        if not o.symbol.isalnum():
            return "bad_symbol"
        return None

    def _refuse_or_dedupe(self, o: OrderRequest) -> OrderAck | None:
        """An invalid request is refused; a key already reserved answers with its
        current state (``duplicate``) and never reaches the exchange again."""
        assert self.db is not None
        if (problem := self._validate(o)) is not None:
            self.counters["invalid_requests"] += 1
            logger.warning("executor: invalid order {}: {}", o.client_order_id, problem)
            return self._reject(o.client_order_id, problem)
        existing = self.db.get_key(SUBMIT, o.client_order_id)
        if existing is None:
            return None
        self.counters["duplicates"] += 1
        return OrderAck(client_order_id=o.client_order_id, status="duplicate",
                        key_status=existing.status, reason=existing.reason)

    async def _on_submit(self, o: OrderRequest) -> OrderAck:
        assert self.db is not None
        if (refusal := self._refuse_or_dedupe(o)) is not None:
            return refusal
        cid = o.client_order_id
        if self.recovering:
            return self._reject(cid, "recovering")
        if (block := self.write_block(SUBMIT)) is not None:
            return self._reject(cid, block)
        now = time.time()
        row = OrderRow(cid, o.intent_id, self.mode, o.symbol, o.side, o.order_type, o.price,
                       o.quantity, Decimal(0), "PENDING", None, o.ttl_s, o.reason, False, now, now)
        self.db.reserve_order(row, retention_s=self.cfg.executor.key_retention_s)
        self.keys[(SUBMIT, cid)] = idem.reserve(now)
        self.key_modes[(SUBMIT, cid)] = self.mode
        self.crash.hit("after_reserve")
        self.counters["accepted"] += 1
        self.spawn(self._send_while_sendable((SUBMIT, cid), self._send_order_once),
                   f"submit-{cid}")
        if not self.dry_run:
            await _let_the_send_start()
        # Announced only while still PENDING: a send that already ended (a gate closed
        # or a local refusal) has published its outcome, and PENDING must not follow it.
        self._publish_order(cid, only_in_state="PENDING")
        return OrderAck(client_order_id=cid, status="accepted", key_status="PENDING")

    def _on_cancel(self, cid: str, reason: str) -> OrderAck:
        assert self.db is not None
        order = self.db.get_order(cid)
        if order is None:
            raise CommandError(f"unknown order {cid}")
        if order.state in TERMINAL_ORDER_STATES:
            return self._reject(cid, f"already_{order.state.lower()}", order.state)
        if order.exchange_order_id is None:
            return self._reject(cid, "not_acknowledged_yet")
        existing = self.db.get_key(CANCEL, cid)
        if existing is not None and existing.status != "FAILED":
            self.counters["duplicates"] += 1
            return OrderAck(client_order_id=cid, status="duplicate", key_status=existing.status,
                            reason=existing.reason)
        if (block := self.write_block(CANCEL)) is not None:
            return self._reject(cid, block)
        now = time.time()
        # Cancels may be re-armed after FAILED: cancelling twice is harmless at the exchange.
        self.db.reserve_key(CANCEL, cid, self.mode, now, self.cfg.executor.key_retention_s)
        self.keys[(CANCEL, cid)] = idem.reserve(now)
        self.key_modes[(CANCEL, cid)] = self.mode
        self.counters["cancel_accepted"] += 1
        logger.info("executor: cancel {} ({})", cid, reason)
        self.spawn(self._send_while_sendable((CANCEL, cid), self._send_cancel_once),
                   f"cancel-{cid}")
        return OrderAck(client_order_id=cid, status="accepted", key_status="PENDING",
                        reason=reason)

    def _on_set_latch(self, latch: str, value: bool, reason: str) -> Ack:
        assert self.db is not None
        self.db.set_latch(latch, value, reason)
        self.latches = self.db.latches()
        logger.warning("executor: latch {} = {} ({})", latch, value, reason)
        if latch == "paused":
            self.publish(Control(command="pause" if value else "resume", reason=reason))
        elif self.latch("kill_switch") or self.latch("safety_latch") or self.cfg.gates.kill_switch:
            self.publish(Control(command="kill_switch_on", reason=f"{latch}: {reason}"))
        else:
            self.publish(Control(command="kill_switch_off", reason=f"{latch} cleared: {reason}"))
        self._sync_fsm(f"latch {latch}={value}")
        self._dirty = True
        return Ack(detail=f"{latch}={'on' if value else 'off'}")

    async def on_control(self, control: Control) -> None:
        """Broadcast controls. Turning a latch ON from the bus is always honoured (it is the
        safe direction); the kill switch is only cleared by the SetLatch command. Our own
        broadcast comes back here, so every branch is idempotent."""
        assert self.db is not None
        if self.mirror:
            # Latches are the recorded ones (in the mirrored snapshots); nothing is
            # persisted or broadcast from here.
            if control.command == "shutdown":
                self.stop()
            return
        match control.command:
            case "kill_switch_on":
                if not (self.latch("kill_switch") or self.latch("safety_latch")):
                    self._on_set_latch("kill_switch", True, control.reason or "control")
            case "pause" if not self.latch("paused"):
                self._on_set_latch("paused", True, control.reason or "control")
            case "resume" if self.latch("paused"):
                self._on_set_latch("paused", False, control.reason or "control")
            case "shutdown":
                self.stop()

    # --- key transitions ---------------------------------------------------------------
    def _key_event(self, k: KeyId, event: idem.Event, *, persist: bool = True,
                   **order_update: Any) -> Key:
        assert self.db is not None
        old = self.keys[k]
        policy = self.instant_policy if self.key_modes.get(k) == "dry-run" else self.policy
        new = idem.apply(old, event, policy)
        if persist:
            self.db.update_key(k[0], k[1], status=new.status, attempts=new.attempts,
                               probes=new.probes, next_probe_at=new.next_at,
                               settle_from=new.settle_from,
                               exchange_order_id=new.exchange_order_id, reason=new.reason,
                               now=time.time(), order_update=order_update or None)
        if new.terminal:
            self.keys.pop(k, None)
        else:
            self.keys[k] = new
        if new.status != old.status:
            prefix = "" if k[0] == SUBMIT else "cancel_"
            self.counters[prefix + new.status.lower()] += 1
        if order_update:
            self._publish_order(k[1], new.reason)
        return new

    def _publish_order(self, cid: str, reason: str = "", only_in_state: str = "") -> None:
        assert self.db is not None
        o = self.db.get_order(cid)
        if o is None or (only_in_state and o.state != only_in_state):
            return
        self._dirty = True
        self.publish(OrderEvent(client_order_id=cid, intent_id=o.intent_id, symbol=o.symbol,
                                side=o.side, state=o.state, price=o.price,  # type: ignore[arg-type]
                                quantity=o.quantity, filled_quantity=o.filled_quantity,
                                exchange_order_id=o.exchange_order_id,
                                reason=reason or o.reason))

    # --- sending -----------------------------------------------------------------------
    async def _send_while_sendable(
        self, k: KeyId, send_once: Callable[[KeyId], Awaitable[None]]
    ) -> None:
        """Send a key until it leaves the sendable phases (sent, refused, or given
        up), honouring its backoff between provably-unsent attempts."""
        while True:
            key = self.keys.get(k)
            if key is None or key.phase not in idem.SENDABLE_PHASES:
                return
            wait = key.next_at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await send_once(k)

    async def _send_order_once(self, k: KeyId) -> None:
        assert self.db is not None
        cid = k[1]
        order = self.db.get_order(cid)
        assert order is not None, f"order row of {cid} missing"
        now = time.time()
        if (block := self.write_block(SUBMIT)) is not None:
            logger.warning("executor: {} not sent: {}", cid, block)
            self._key_event(k, idem.GateBlocked(now, block), state="FAILED",
                            reason=f"blocked:{block}")
            return
        # In memory only: persisting "sent" would cost a second fsync before every send,
        # and a restart treats every non-terminal key as maybe-sent anyway.
        self._key_event(k, idem.SendStarted(now), persist=False)
        self.counters["submitted"] += 1
        try:
            if self.dry_run:
                oid = self._dry_submit()
            else:
                assert self.client is not None
                call = self.client.submit_order(order.symbol, order.side, "limit",
                                                order.quantity, order.price, cid)
                if self.crash.wants_after_send():
                    task = asyncio.ensure_future(call)
                    await self.crash.after_send(self.cfg.rest_url, cid)
                    sub = await task
                else:
                    sub = await call
                oid = sub.id
        except RejectedError as exc:
            logger.warning("executor: {} rejected: {}", cid, exc)
            self._key_event(k, idem.SendRejected(time.time(), f"rejected:{exc.kind}"),
                            state="REJECTED", reason=f"rejected:{exc.kind}")
            return
        except RetryableError as exc:
            new = self._key_event(k, idem.SendRetryable(time.time(), exc.kind,
                                                        exc.retry_after_s))
            logger.warning("executor: {} not sent ({}); {}", cid, exc.kind,
                           "giving up" if new.terminal else f"retry #{new.attempts + 1}")
            if new.terminal:
                self.db.update_order(cid, time.time(), state="FAILED", reason=new.reason)
                self._publish_order(cid, new.reason)
            return
        except Exception as exc:  # noqa: BLE001 - any other outcome may have reached it
            reason = getattr(exc, "kind", type(exc).__name__)
            logger.warning("executor: {} outcome unknown ({}); probing", cid, exc)
            self._key_event(k, idem.SendAmbiguous(time.time(), f"ambiguous:{reason}"),
                            state="UNKNOWN", reason=f"ambiguous:{reason}")
            return
        self.crash.hit("after_response")
        self._key_event(k, idem.SendSucceeded(time.time(), oid), state="OPEN",
                        exchange_order_id=oid)

    def _dry_submit(self) -> int:
        self._dry_seq += 1
        return self._dry_seq

    async def _send_cancel_once(self, k: KeyId) -> None:
        assert self.db is not None
        cid = k[1]
        order = self.db.get_order(cid)
        assert order is not None and order.exchange_order_id is not None
        if (block := self.write_block(CANCEL)) is not None:
            self._key_event(k, idem.GateBlocked(time.time(), block))
            return
        self._key_event(k, idem.SendStarted(time.time()), persist=False)
        self.counters["cancel_sent"] += 1
        if self.dry_run:
            self._key_event(k, idem.SendSucceeded(time.time(), order.exchange_order_id),
                            state="CANCELED", reason="canceled")
            return
        assert self.client is not None
        try:
            await self.client.cancel_order(order.exchange_order_id)
        except RejectedError as exc:
            # Typically already filled or canceled; the final state is fetched below.
            self._key_event(k, idem.SendRejected(time.time(), f"rejected:{exc.kind}"))
        except RetryableError as exc:
            self._key_event(k, idem.SendRetryable(time.time(), exc.kind, exc.retry_after_s))
            return
        except Exception as exc:  # noqa: BLE001
            self._key_event(k, idem.SendAmbiguous(time.time(), f"ambiguous:{exc!r}"[:200]))
            return
        else:
            self._key_event(k, idem.SendSucceeded(time.time(), order.exchange_order_id))
        await self._refresh_order(cid)

    async def _refresh_order(self, cid: str) -> None:
        """Best effort: fetch one order's state by exchange id and record it."""
        assert self.db is not None and self.client is not None
        order = self.db.get_order(cid)
        if order is None or order.exchange_order_id is None:
            return
        try:
            eo = await self.client.get_order(order.exchange_order_id)
        except BtcTurkError as exc:
            logger.info("executor: refresh of {} failed: {}", cid, exc)
            return
        self._record_exchange_order(order, eo)

    def _record_exchange_order(self, order: OrderRow, eo: ExchangeOrder) -> bool:
        assert self.db is not None
        state, filled = exchange_view(eo)
        if (state, filled, eo.id) == (order.state, order.filled_quantity,
                                      order.exchange_order_id):
            return False
        self.db.update_order(order.client_order_id, time.time(), state=state,
                             filled_quantity=filled, exchange_order_id=eo.id)
        self._publish_order(order.client_order_id)
        return True

    # --- probing / recovery --------------------------------------------------------------
    async def _probe_loop(self) -> None:
        while True:
            now = time.time()
            due = [k for k, key in list(self.keys.items())
                   if idem.needs_probe(key, now) and k not in self.unresolvable]
            for k in due:
                if k in self.keys:
                    await self._probe(k)
            if self.recovering:
                await self._try_finish_recovery()
            # Keys become due on a backoff of >= 0.5 s: a 4 Hz idle tick is plenty
            # and keeps an idle executor from waking 10 times a second.
            await asyncio.sleep(0.02 if due else 0.25)

    async def _probe(self, k: KeyId) -> None:
        assert self.db is not None
        key_mode = self.key_modes.get(k, self.mode)
        inherited = self.recovering
        if key_mode == "dry-run" and self.mode != "dry-run":
            # Dry-run never sent anything anywhere.
            self._finish_probe(k, None, inherited)
            return
        if key_mode != self.mode:
            self.unresolvable.add(k)
            logger.error("executor: key {} was created in {} mode and cannot be resolved in "
                         "{} mode; staying in recovery (start in {} mode to resolve it)",
                         k, key_mode, self.mode, key_mode)
            return
        order = self.db.get_order(k[1])
        if order is None:
            logger.error("executor: key {} has no order row; marking FAILED", k)
            self._finish_probe(k, None, inherited)
            return
        if self.dry_run:
            found = order.exchange_order_id is not None
            self._finish_probe(k, order.exchange_order_id if found else None, inherited,
                               found=found)
            return
        if (block := self.read_block()) is not None:
            self._key_event(k, idem.ProbeFailed(time.time(), block))
            return
        try:
            if k[0] == SUBMIT:
                eo = await self._find_on_exchange(order)
            else:
                assert order.exchange_order_id is not None
                eo = await self.client.get_order(order.exchange_order_id)  # type: ignore[union-attr]
        except BtcTurkError as exc:
            self.counters["probe_errors"] += 1
            self._key_event(k, idem.ProbeFailed(time.time(), exc.kind))
            return
        if inherited:
            self.crash.hit("during_recovery")
        if k[0] == CANCEL:
            done = eo is not None and exchange_view(eo)[0] in TERMINAL_ORDER_STATES
            self._finish_probe(k, eo.id if eo else None, inherited, found=done, eo=eo)
        else:
            self._finish_probe(k, eo.id if eo else None, inherited, found=eo is not None, eo=eo)

    def _finish_probe(self, k: KeyId, oid: int | None, inherited: bool, *, found: bool = False,
                      eo: ExchangeOrder | None = None) -> None:
        assert self.db is not None
        now = time.time()
        cid = k[1]
        if found:
            update: dict[str, Any] = {}
            if k[0] == SUBMIT:
                state, filled = exchange_view(eo) if eo is not None else ("OPEN", Decimal(0))
                update = {"state": state, "filled_quantity": filled, "exchange_order_id": oid}
            elif eo is not None:
                update = {"state": exchange_view(eo)[0], "filled_quantity": eo.filled}
            self._key_event(k, idem.ProbeFound(now, oid), **update)
            logger.info("executor: probe found {} as {} ({})", k, oid,
                        "inherited" if inherited else "ambiguous send")
            return
        new = self._key_event(k, idem.ProbeNotFound(now))
        if new.status == KeyStatus.FAILED and k[0] == SUBMIT:
            self.db.update_order(cid, now, state="FAILED", reason=new.reason)
            self._publish_order(cid, new.reason)
            logger.info("executor: {} not on the exchange after the settle window: FAILED", cid)

    async def _find_on_exchange(self, order: OrderRow) -> ExchangeOrder | None:
        """Open orders first (cheap, current), then all orders since just before the key."""
        assert self.client is not None
        cid = order.client_order_id
        for eo in await self.client.open_orders(order.symbol):
            if eo.client_order_id == cid:
                return eo
        start_ms = int((order.created_at - 120) * 1000)
        for eo in await self.client.all_orders(order.symbol, start_ms=start_ms):
            if eo.client_order_id == cid:
                return eo
        return None

    async def _try_finish_recovery(self) -> None:
        if not self.orphan_scan_done and self.read_block() is None:
            try:
                await self._poll_once()
                self.orphan_scan_done = True
            except BtcTurkError as exc:
                self._log_once("recovery_poll", f"executor: recovery scan failed: {exc}")
                return
        elif not self.orphan_scan_done:
            self._log_once("recovery_blocked",
                           f"executor: cannot scan the exchange: {self.read_block()}")
            return
        if any(key.phase == Phase.MAYBE_SENT for key in self.keys.values()):
            return
        self.recovering = False
        logger.info("executor: recovery complete")
        self._sync_fsm("recovery complete")
        self._dirty = True

    def _log_once(self, what: str, text: str) -> None:
        if what not in self._logged_once:
            self._logged_once.add(what)
            logger.warning(text)

    # --- following orders and fills ------------------------------------------------------
    async def _poll_loop(self) -> None:
        # Short sleeps with the interval re-read each time: when the private socket goes
        # down (or misses an event), an overdue slow poll happens at once.
        last = time.monotonic()
        while True:
            now = time.monotonic()
            self._ws_check(now)
            due = last + self.ws_watch.poll_interval(self._ws_up())
            if now < due:
                await asyncio.sleep(min(0.25, due - now))
                continue
            last = now
            if self.read_block() is not None or self.recovering:
                continue
            try:
                await self._poll_once(watch=True)
                self.counters["polls"] += 1
            except BtcTurkError as exc:
                self.counters["poll_errors"] += 1
                logger.warning("executor: poll failed: {}", exc)

    def _in_resolution(self) -> frozenset[str]:
        return frozenset(k[1] for k in self.keys if k[0] == SUBMIT)

    async def _poll_once(self, watch: bool = False) -> None:
        """All pairs at once: open orders, then recent trades, TTL cancels, balances.
        ``watch``: a periodic poll, whose findings witness the private socket."""
        assert self.db is not None and self.client is not None
        changed: list[str] = []
        up = self._ws_up()
        exch_open = await self.client.open_orders()
        await self._apply_open_orders(exch_open, "", changed)
        await self._read_trades(changed=changed)
        if watch and changed:
            self.ws_watch.on_poll_changes(changed, time.monotonic(), up and self._ws_up())
        self._cancel_expired()
        if time.monotonic() - self._last_balance_fetch > self.cfg.executor.balance_refresh_s:
            await self._fetch_balances()

    def _trade_start_ms(self, lookback_s: float = 0.0) -> int:
        assert self.db is not None
        oldest = None
        if self.trade_window.synced_from is None:
            oldest = min((r.created_at for r in self.db.open_orders(self.mode)), default=None)
        return int(self.trade_window.start_s(time.time(), oldest, lookback_s) * 1000)

    async def _read_trades(self, pair: str | None = None, lookback_s: float = 0.0,
                           changed: list[str] | None = None) -> int:
        """Import the trades the exchange lists and we do not hold yet; returns how many."""
        assert self.client is not None
        started = time.time()
        trades = await self.client.user_trades(
            pair, start_ms=self._trade_start_ms(lookback_s), skip_ids=self.trade_window)
        n = self._import_trades(trades, changed)
        if pair is None:
            self.trade_window.read_ok(started)
        return n

    async def _apply_open_orders(self, exch_open: list[ExchangeOrder], symbol: str,
                                 changed: list[str] | None = None) -> list[str]:
        """Bring DB rows in line with the exchange's open orders; returns fix details
        (and appends the client ids it changed to ``changed``)."""
        assert self.db is not None and self.client is not None
        prefix = self.cfg.executor.client_id_prefix
        db_open = self.db.open_orders(self.mode, symbol)
        by_cid = {r.client_order_id: r for r in db_open}
        for eo in exch_open:
            cid = eo.client_order_id or ""
            if is_ours(cid, prefix) and cid not in by_cid:
                row = self.db.get_order(cid)
                if row is not None:
                    by_cid[cid] = row
        details: list[str] = []
        for d in diff_open_orders(db_open, by_cid, exch_open, prefix,
                                  in_resolution=self._in_resolution()):
            details.append(await self._fix(d, by_cid.get(d.client_order_id)))
            if changed is not None:
                changed.append(d.client_order_id)
        return details

    async def _fix(self, d: Drift, row: OrderRow | None) -> str:
        assert self.db is not None and self.client is not None
        now = time.time()
        if d.kind == "orphan":
            assert d.exchange_order is not None
            eo = d.exchange_order
            self.db.insert_adopted(OrderRow(
                d.client_order_id, f"adopted:{d.client_order_id}", self.mode, eo.pair,
                eo.side if eo.side in ("buy", "sell") else "buy", eo.method, eo.price,
                eo.amount, d.new_filled, d.new_state, eo.id, 0.0, "adopted", True, now, now),
                self.cfg.executor.key_retention_s)
            self.counters["orphans_adopted"] += 1
            logger.warning("executor: adopted orphan order {} ({})", d.client_order_id, d.detail)
            self._publish_order(d.client_order_id, "adopted")
            if self.cfg.executor.orphan_policy == "cancel":
                self._on_cancel(d.client_order_id, "orphan_policy")
            return f"adopted {d.client_order_id}: {d.detail}"
        assert row is not None
        if d.kind == "update":
            key = self.db.get_key(SUBMIT, row.client_order_id)
            if key is not None and key.status == "FAILED":
                # An order we had given up on showed up: adopt it, report it.
                self.keys[(SUBMIT, row.client_order_id)] = idem.Key(
                    KeyStatus.FAILED, Phase.DONE, key.attempts, key.probes)
                self.key_modes[(SUBMIT, row.client_order_id)] = self.mode
                self._key_event((SUBMIT, row.client_order_id),
                                idem.AdoptedLate(now, d.exchange_order.id if d.exchange_order
                                                 else None))
                self.counters["late_adopted"] += 1
            self.db.update_order(row.client_order_id, now, state=d.new_state,
                                 filled_quantity=d.new_filled,
                                 exchange_order_id=d.exchange_order.id if d.exchange_order
                                 else row.exchange_order_id)
            self._publish_order(row.client_order_id)
            return f"updated {row.client_order_id}: {d.detail}"
        # missing: the order ended; find out how
        assert row.exchange_order_id is not None
        eo = await self.client.get_order(row.exchange_order_id)
        self._record_exchange_order(row, eo)
        return f"closed {row.client_order_id}: {d.detail} -> {exchange_view(eo)[0]}"

    def _import_trades(self, trades: list[UserTrade], changed: list[str] | None = None) -> int:
        assert self.db is not None
        prefix = self.cfg.executor.client_id_prefix
        imported = 0
        for t in sorted(trades, key=lambda t: (t.timestamp_ms, t.id)):
            tid = str(t.id)
            if self.db.has_fill(tid):
                self.trade_window.remember(t.id)
                continue
            row = self.db.order_by_exchange_id(t.order_id)
            if row is None and is_ours(t.client_order_id, prefix):
                row = self.db.get_order(t.client_order_id or "")
            if row is None:
                self.counters["foreign_trades"] += 1
                continue
            # Foreign trades are not remembered: one seen before its order's exchange
            # id was recorded must be matched again on the next read.
            self.trade_window.remember(t.id)
            if self._record_fill(FillRow(tid, t.order_id, row.client_order_id, row.symbol,
                                         t.side, t.price, t.amount, t.fee + t.tax,
                                         t.denominator, t.timestamp_ms)):
                imported += 1
                if changed is not None:
                    changed.append(row.client_order_id)
        return imported

    def _record_fill(self, f: FillRow) -> bool:
        assert self.db is not None
        pos = self.db.positions(self.mode).get(f.symbol, PositionState())
        new = apply_fill(pos, f.side, f.price, f.quantity, f.fee)
        if not self.db.insert_fill(f, self.mode, new, time.time()):
            return False
        self.counters["fills"] += 1
        self._dirty = True
        self.publish(Fill(trade_id=f.trade_id, exchange_order_id=f.exchange_order_id,
                          client_order_id=f.client_order_id, symbol=f.symbol,
                          side=f.side, price=f.price, quantity=f.quantity,  # type: ignore[arg-type]
                          fee=f.fee, fee_asset=f.fee_asset, ts_ms=f.ts_ms))
        return True

    def _cancel_expired(self) -> None:
        assert self.db is not None
        for row in ttl_expired(self.db.open_orders(self.mode), time.time(),
                               self.cfg.executor.stale_order_ttl_s):
            key = self.db.get_key(CANCEL, row.client_order_id)
            if key is not None and key.status != "FAILED":
                continue
            self.counters["ttl_cancels"] += 1
            ack = self._on_cancel(row.client_order_id, "ttl_expired")
            if ack.status == "rejected":
                self._log_once(f"ttl-{row.client_order_id}",
                               f"executor: TTL cancel of {row.client_order_id} refused: "
                               f"{ack.reason}")

    async def _fetch_balances(self) -> list[tuple[str, Decimal, Decimal]]:
        assert self.db is not None and self.client is not None
        balances = [(b.asset, b.free, b.locked) for b in await self.client.balances()]
        self.db.set_balances(self.mode, balances, time.time())
        self._last_balance_fetch = time.monotonic()
        self._dirty = True
        return balances

    # --- private WebSocket -------------------------------------------------------------
    def _start_private_ws(self) -> None:
        if not self.cfg.executor.private_ws:
            logger.info("executor: private WebSocket off (executor.private_ws = false)")
            return
        if (block := self.read_block()) is not None:
            logger.warning("executor: private WebSocket off: {}", block)
            return
        key, secret = self.cfg.credentials()
        if not (key and secret):
            logger.warning("executor: private WebSocket off: no credentials")
            return
        self._ws_enabled = True
        self.spawn(self._private_ws_loop(key, secret), "private-ws")
        self.spawn(self._refresh_loop(), "ws-refresh")

    async def _private_ws_loop(self, key: str, secret: str) -> None:
        """Runs the socket; a new one when the watch asks for a reconnect (stop())."""
        while True:
            self.ws = BtcTurkWebSocket(
                self.cfg.ws_url, subscriptions=[], on_event=self._on_ws_event,
                api_key=key, api_secret=secret, stall_timeout_s=WS_STALL_TIMEOUT_S,
                heartbeat_s=WS_HEARTBEAT_S)
            self._ws_login_failed_seen = 0
            try:
                await self.ws.run()
            except Exception:  # noqa: BLE001 - the socket never takes the executor down
                self.counters["ws_errors"] += 1
                logger.exception("executor: private WebSocket failed; starting a new one")
                await asyncio.sleep(1.0)

    def _ws_up(self) -> bool:
        ws = self.ws
        return ws is not None and ws.connected and ws.logged_in

    def _ws_status(self) -> str:
        if not self._ws_enabled:
            return "off"
        return "connected" if self.ws_watch.trusted(self._ws_up()) else "down"

    def _our_cid(self, cid: str | None, order_id: int) -> str | None:
        """The client id of one of our orders, or None (foreign or unknown)."""
        assert self.db is not None
        if is_ours(cid, self.cfg.executor.client_id_prefix):
            return cid
        row = self.db.order_by_exchange_id(order_id)
        return row.client_order_id if row is not None else None

    async def _on_ws_event(self, event: Any) -> None:
        now = time.monotonic()
        match event:
            case WsConnected():
                # Our own numbering: a reconnect by the watch makes a new client object.
                self.counters["ws_connects"] += 1
                self._ws_conn = (self.counters["ws_connects"], now)
                logger.info("executor: private WebSocket connected (#{})",
                            self.counters["ws_connects"])
            case WsDisconnected():
                self.ws_watch.on_down()
                self.counters["ws_disconnects"] += 1
            case OrderMatch() | OrderInsert() | OrderDelete() | UserTrade():
                if self.db is None:
                    return
                cid = self._our_cid(event.client_order_id, event.order_id)
                if cid is None:
                    self.counters["ws_foreign_events"] += 1
                    return
                self.counters["ws_private_events"] += 1
                self.ws_watch.on_event(cid, now)
                if isinstance(event, OrderInsert) and self._insert_known(cid, event.order_id):
                    # The send's answer already said so: a refresh would only cost two
                    # REST calls right after every submit.
                    self.counters["ws_inserts_known"] += 1
                    return
                self._refresh_cids.add(cid)
                self._refresh_wanted.set()

    def _insert_known(self, cid: str, order_id: int) -> bool:
        assert self.db is not None
        row = self.db.get_order(cid)
        return (row is not None and row.exchange_order_id == order_id
                and row.state == "OPEN" and row.filled_quantity == 0)

    async def _refresh_loop(self) -> None:
        """One refresh in flight; events during it set the flag again: exactly one more."""
        while True:
            await self._refresh_wanted.wait()
            self._refresh_wanted.clear()
            cids, self._refresh_cids = self._refresh_cids, set()
            await self._ws_refresh(cids)

    async def _ws_refresh(self, cids: set[str]) -> None:
        # Recovery resolves keys through probes and ends with a full scan: nothing to do.
        if self.db is None or self.recovering or self.read_block() is not None:
            return
        assert self.client is not None
        self.counters["ws_refreshes"] += 1
        for cid in sorted(cids):
            await self._refresh_order(cid)
        try:
            if await self._read_trades():
                # A fill moved money: do not leave balances to the (slow) poll.
                await self._fetch_balances()
        except BtcTurkError as exc:
            self.counters["ws_refresh_errors"] += 1
            logger.info("executor: trade refresh failed (the poll will catch up): {}", exc)

    def _ws_check(self, now: float) -> None:
        """From the poll loop: login failures (said once per connection), a socket that
        stays unanswered, and events the socket missed (trust withdrawn, reconnect)."""
        ws = self.ws
        if ws is None:
            return
        conn, since = self._ws_conn
        failed = ws.counters.get("login_failed", 0)
        if failed > self._ws_login_failed_seen:
            self.counters["ws_login_failed"] += failed - self._ws_login_failed_seen
            self._ws_login_failed_seen = failed
            if self._ws_login_warned != conn:
                self._ws_login_warned = conn
                logger.warning("executor: private WebSocket login refused (connection #{}); "
                               "following orders by polling", conn)
        elif (ws.connected and not ws.logged_in and now - since > WS_LOGIN_WAIT_S
              and self._ws_login_warned != conn):
            self._ws_login_warned = conn
            logger.warning("executor: private WebSocket not logged in {} s after connecting "
                           "(connection #{}); following orders by polling",
                           WS_LOGIN_WAIT_S, conn)
        missed = self.ws_watch.check(now)
        if missed:
            self.counters["ws_missed_events"] += len(missed)
            logger.warning("executor: private WebSocket missed events of {}; polling every "
                           "{} s until it delivers again, reconnecting", missed[:5],
                           self.ws_watch.fast_s)
            ws.stop()

    # --- dry-run fills -----------------------------------------------------------------
    async def on_message(self, topic: str, packet: Packet) -> None:
        body = packet.body
        if self.mirror:
            self._mirror_message(body)
            return
        if not self.dry_run or not isinstance(body, BookSnapshot) or self.db is None:
            return
        for row in self.db.open_orders(self.mode, body.symbol):
            if row.state not in ("OPEN", "PARTIAL") or row.exchange_order_id is None:
                continue
            fill = crossing_fill(row.side, row.price, row.quantity - row.filled_quantity,
                                 body.bids, body.asks, self.cfg.executor.dry_run_fee_bps)
            if fill is None:
                continue
            self._dry_seq += 1
            quote = row.symbol[-3:] if row.symbol.endswith("TRY") else "QUOTE"
            self._record_fill(FillRow(f"dry-{self._dry_seq}", row.exchange_order_id,
                                      row.client_order_id, row.symbol, row.side, fill.price,
                                      fill.quantity, fill.fee, quote, time.time_ns() // 10**6))
            filled = row.filled_quantity + fill.quantity
            state = "FILLED" if filled >= row.quantity else "PARTIAL"
            self.db.update_order(row.client_order_id, time.time(), state=state,
                                 filled_quantity=filled)
            self._publish_order(row.client_order_id, "dry_run_fill")

    # --- reconcile ---------------------------------------------------------------------
    async def _reconcile(self, symbol: str) -> ReconcileResult:
        assert self.db is not None
        self.counters["reconciles"] += 1
        if self.dry_run:
            return ReconcileResult(ok=True, drift_found=0, drift_fixed=0, failed_symbols=[],
                                   details=["dry-run: nothing to compare on an exchange"])
        if (block := self.read_block()) is not None:
            syms = [symbol] if symbol else list(self.cfg.marketdata.symbols)
            return ReconcileResult(ok=False, drift_found=0, drift_fixed=0,
                                   failed_symbols=syms, details=[f"blocked: {block}"])
        assert self.client is not None
        symbols = [symbol] if symbol else sorted(set(self.cfg.marketdata.symbols)
                                                 | set(self.db.order_symbols(self.mode)))
        failed: list[str] = []
        details: list[str] = []
        found = fixed = 0
        lookback_s = self.cfg.executor.reconcile_trade_lookback_s
        for sym in symbols:
            try:
                fixes = await self._apply_open_orders(await self.client.open_orders(sym), sym)
                n = await self._read_trades(sym, lookback_s)
            except BtcTurkError as exc:
                failed.append(sym)
                details.append(f"{sym}: {exc}")
                continue
            if n:
                fixes.append(f"{sym}: imported {n} missing fills")
            found += len(fixes)
            fixed += len(fixes)
            details.extend(fixes)
        try:
            drift = self._balance_check(await self._fetch_balances(), symbols)
        except BtcTurkError as exc:
            failed.extend(s for s in symbols if s not in failed)
            details.append(f"balances: {exc}")
        else:
            found += len(drift)
            details.extend(drift)
        unresolved = [f"{k[0]} {k[1]} {v.status}" for k, v in self.keys.items()
                      if v.phase == Phase.MAYBE_SENT]
        details.extend(f"unresolved key: {u}" for u in unresolved[:20])
        if found:
            self.counters["drift_found"] += found
            self.counters["drift_fixed"] += fixed
            logger.warning("executor: reconcile found {} drift(s): {}", found, details[:10])
        return ReconcileResult(ok=not failed, drift_found=found, drift_fixed=fixed,
                               failed_symbols=failed, details=details[:100])

    def _balance_check(self, balances: list[tuple[str, Decimal, Decimal]],
                       symbols: list[str]) -> list[str]:
        """Base-asset balance vs position from fills; a difference must be seen on two
        consecutive reconciles before it is reported (a fill may land between the two
        fetches)."""
        assert self.db is not None
        totals = {a: f + lk for a, f, lk in balances}
        positions = {s[:-3]: p.quantity for s, p in self.db.positions(self.mode).items()
                     if s.endswith("TRY")}
        for sym in symbols:
            base = sym[:-3] if sym.endswith("TRY") else sym
            if base not in self._balance_baseline:
                self._balance_baseline[base] = (totals.get(base, Decimal(0))
                                                - positions.get(base, Decimal(0)))
        drift = balance_drift(totals, positions, self._balance_baseline)
        out = [f"balance {a}: exchange differs from fills by {d}" for a, d in drift.items()
               if self._balance_suspect.get(a) == d]
        self._balance_suspect = drift
        return out

    # --- snapshot / heartbeat ----------------------------------------------------------
    def snapshot(self) -> PortfolioSnapshot:
        assert self.db is not None
        counts = self.db.key_counts()
        kill, kill_reason = self.latches.get("kill_switch", (False, ""))
        safety, safety_reason = self.latches.get("safety_latch", (False, ""))
        paused, paused_reason = self.latches.get("paused", (False, ""))
        return PortfolioSnapshot(
            positions=[Position(symbol=s, quantity=p.quantity, avg_cost=p.avg_cost,
                                realized_pnl=p.realized_pnl, fees=p.fees)
                       for s, p in self.db.positions(self.mode).items()],
            balances=[Balance(asset=a, free=f, locked=lk)
                      for a, f, lk in self.db.balances(self.mode)],
            open_orders=[OpenOrder(client_order_id=o.client_order_id, intent_id=o.intent_id,
                                   symbol=o.symbol, side=o.side,  # type: ignore[arg-type]
                                   price=o.price, quantity=o.quantity,
                                   filled_quantity=o.filled_quantity, state=o.state,
                                   exchange_order_id=o.exchange_order_id,
                                   created_wall_ns=int(o.created_at * 1e9))
                         for o in self.db.orders_in_states(self.mode, NON_TERMINAL_ORDER_STATES)],
            latches=Latches(kill_switch=kill or self.cfg.gates.kill_switch, safety_latch=safety,
                            paused=paused,
                            reason=self._latch_reason(kill_reason, safety_reason, paused_reason)),
            keys=KeyCounts(pending=counts["PENDING"], unknown=counts["UNKNOWN"],
                           failed=counts["FAILED"], committed=counts["COMMITTED"]),
            recovering=self.recovering,
        )

    def _latch_reason(self, *reasons: str) -> str:
        parts = [r for r in reasons if r]
        if self.cfg.gates.kill_switch:
            parts.insert(0, "config gates.kill_switch")
        return "; ".join(parts)

    async def _portfolio_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._dirty and self.db is not None:
                self._dirty = False
                self.publish(self.snapshot())

    async def _checkpoint_loop(self) -> None:
        """WAL checkpoints on a worker thread (see ExecutorDB.checkpoint), so neither an
        order's reservation nor the event loop ever waits for one."""
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            db = self.db
            if db is None:
                return
            await asyncio.to_thread(db.checkpoint)
            self.counters["wal_checkpoints"] += 1

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            assert self.db is not None
            n = self.db.prune_keys(time.time())
            if n:
                self.counters["keys_pruned"] += n
                logger.info("executor: pruned {} expired keys", n)

    def heartbeat_counters(self) -> dict[str, int]:
        base = {name: self.counters.get(name, 0)
                for name in ("submitted", "committed", "failed", "unknown", "ws_private_events",
                             "ws_refreshes", "ws_missed_events", "ws_login_failed")}
        if self.db is not None:
            counts = self.db.key_counts()
            base.update(keys_pending=counts["PENDING"], keys_unknown=counts["UNKNOWN"],
                        keys_failed=counts["FAILED"], keys_committed=counts["COMMITTED"])
        return base

    def heartbeat_info(self) -> ExecutorInfo:
        kill, kr = self.latches.get("kill_switch", (False, ""))
        safety, sr = self.latches.get("safety_latch", (False, ""))
        paused, pr = self.latches.get("paused", (False, ""))
        return ExecutorInfo(
            kill_switch=kill or self.cfg.gates.kill_switch,
            safety_latch=safety,
            paused=paused,
            latch_reason=self._latch_reason(kr, sr, pr),
            recovering=self.recovering,
            mode=self.mode,
            db=str(self.db_path),
            unresolvable_keys=len(self.unresolvable),
            private_ws=self._ws_status(),
        )


async def _let_the_send_start() -> None:
    """Yield once before announcing an accepted order (PENDING event and reply), which
    wakes half the system: the send task's first step signs the request and writes it
    (shared/btcturk/http.py writes on an idle connection before it first yields), so the
    order is on the wire first. Only an ordering hint: nothing depends on it for
    correctness (the reservation is durable before the step)."""
    await asyncio.sleep(0)


def main() -> None:
    main_for(ExecutorActor)


if __name__ == "__main__":
    main()
