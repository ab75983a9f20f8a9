"""Order intake and the submit/cancel flow (exactly once in effect; the key state machine
is idempotency.py).

SubmitOrder → validate → duplicate? (answer the key's state, never touch the venue)
→ recovering / gates? (refuse, nothing reserved) → reserve key PENDING + order row in one
durable transaction → reply "accepted" → send in a background task → COMMITTED / FAILED
/ UNKNOWN (probed until found, or FAILED after the settle window: probes.py).

- A RetryableError (429, connection refused, connect timeout) proves the request had no
  effect, so the key stays PENDING and the same client order id is re-sent after a
  backoff (at most ``max_send_attempts`` sends), then FAILED.
- A key is never re-sent once it may have reached the venue, and never re-armed once
  FAILED: "safe to decide anew" means a new decision (a new intent id), not a re-send.
- Gates are re-checked right before every write (gates.py). Cancels are allowed under
  kill switch / latch / pause (they reduce risk) but not under safe_mode. A submit
  blocked at send time leaves its key FAILED with reason ``blocked:<gate>``; a submit
  refused at request time reserves nothing (key_status "NONE") so the same intent can be
  tried once the gate opens.
- Market orders are refused ("market_orders_unsupported"): risk sends limit orders and
  a market BUY's quantity semantics (quote amount) would need rounding rules here.
- A venue that does not send (the replay mirror) only reserves: the key stays PENDING in
  that throw-away DB, so a repeat is a duplicate, and nothing is tracked.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from loguru import logger

from actors.executor import idempotency as idem
from actors.executor.caps import Caps, breach
from actors.executor.db import OrderRow
from actors.executor.gates import Gates
from actors.executor.idempotency import Key
from actors.executor.incidents import Incidents
from actors.executor.recovery import exchange_view
from actors.executor.state import CANCEL, SUBMIT, ExecState, KeyId
from bus.messages import TERMINAL_ORDER_STATES, OrderAck, OrderEvent, OrderRequest
from bus.transport import CommandError
from shared.btcturk.errors import BtcTurkError, RejectedError, RetryableError
from shared.btcturk.models import ExchangeOrder
from shared.ids import client_order_id


class Orders:
    def __init__(self, s: ExecState, gates: Gates, incidents: Incidents) -> None:
        self.s = s
        self.gates = gates
        self.incidents = incidents
        self._collisions: set[tuple[str, int]] = set()  # (cid, exchange id) reported
        ex = s.cfg.executor
        self.caps = Caps(ex.max_order_notional, ex.max_open_orders_per_symbol,
                         ex.max_orders_per_minute,
                         frozenset(ex.allowed_symbols or s.cfg.marketdata.symbols))
        self._recent: deque[float] = deque()  # reservation times (mono), last minute
        self.policy = idem.Policy(ex.settle_window_s, ex.probe_backoff_initial_s,
                                  ex.probe_backoff_max_s, ex.max_send_attempts)
        # Dry-run keys were never sent anywhere: they resolve at once.
        self.instant_policy = idem.Policy(0.0, 0.0, 0.0, ex.max_send_attempts)

    # --- intake -----------------------------------------------------------------------
    def reject(self, cid: str, reason: str, key_status: str = "NONE") -> OrderAck:
        self.s.counters["rejected"] += 1
        return OrderAck(client_order_id=cid, status="rejected", key_status=key_status,
                        reason=reason)

    def validate(self, o: OrderRequest) -> str | None:
        try:
            expected = client_order_id(self.s.cfg.executor.client_id_prefix, o.intent_id)
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

    def refuse_or_dedupe(self, o: OrderRequest) -> OrderAck | None:
        """An invalid request is refused; a key already reserved answers with its
        current state (``duplicate``) and never reaches the venue again."""
        if (problem := self.validate(o)) is not None:
            self.s.counters["invalid_requests"] += 1
            logger.warning("executor: invalid order {}: {}", o.client_order_id, problem)
            return self.reject(o.client_order_id, problem)
        existing = self.s.db.get_key(SUBMIT, o.client_order_id)
        if existing is None:
            return None
        self.s.counters["duplicates"] += 1
        return OrderAck(client_order_id=o.client_order_id, status="duplicate",
                        key_status=existing.status, reason=existing.reason)

    def _row(self, o: OrderRequest, now: float) -> OrderRow:
        return OrderRow(o.client_order_id, o.intent_id, self.s.mode, o.symbol, o.side,
                        o.order_type, o.price, o.quantity, Decimal(0), "PENDING", None,
                        o.ttl_s, o.reason, False, now, now)

    async def submit(self, o: OrderRequest) -> OrderAck:
        s = self.s
        if (refusal := self.refuse_or_dedupe(o)) is not None:
            return refusal
        cid = o.client_order_id
        now = s.now()
        if not s.venue.sends:
            s.db.reserve_order(self._row(o, now), retention_s=s.cfg.executor.key_retention_s)
            s.counters["accepted"] += 1
            return OrderAck(client_order_id=cid, status="accepted", key_status="PENDING")
        if s.recovering:
            return self.reject(cid, "recovering")
        if (block := self.gates.write_block(SUBMIT)) is not None:
            return self.reject(cid, block)
        open_on_symbol = len(s.db.open_orders(s.mode, o.symbol))
        if (hit := breach(self.caps, o.symbol, o.price, o.quantity, open_on_symbol,
                          self._recent, s.mono())) is not None:
            name, detail = hit
            s.counters["cap_breaches"] += 1
            s.counters[f"cap_breach.{name}"] += 1
            self.incidents.record("cap_breach", f"{cid} refused: {name}: {detail}",
                                  symbol=o.symbol, client_order_id=cid)
            return self.reject(cid, f"cap:{name}")
        self._recent.append(s.mono())
        s.db.reserve_order(self._row(o, now), retention_s=s.cfg.executor.key_retention_s)
        s.keys[(SUBMIT, cid)] = idem.reserve(now)
        s.key_modes[(SUBMIT, cid)] = s.mode
        s.faults.hit("after_reserve")
        s.counters["accepted"] += 1
        s.spawn(self.send_while_sendable((SUBMIT, cid), self._send_order_once),
                f"submit-{cid}")
        if not s.dry_run:
            await _let_the_send_start()
        # Announced only while still PENDING: a send that already ended (a gate closed
        # or a local refusal) has published its outcome, and PENDING must not follow it.
        self.publish_order(cid, only_in_state="PENDING")
        return OrderAck(client_order_id=cid, status="accepted", key_status="PENDING")

    def cancel(self, cid: str, reason: str) -> OrderAck:
        s = self.s
        order = s.db.get_order(cid)
        if order is None:
            raise CommandError(f"unknown order {cid}")
        if order.state in TERMINAL_ORDER_STATES:
            return self.reject(cid, f"already_{order.state.lower()}", order.state)
        if order.exchange_order_id is None:
            return self.reject(cid, "not_acknowledged_yet")
        existing = s.db.get_key(CANCEL, cid)
        if existing is not None and existing.status != "FAILED":
            s.counters["duplicates"] += 1
            return OrderAck(client_order_id=cid, status="duplicate", key_status=existing.status,
                            reason=existing.reason)
        if (block := self.gates.write_block(CANCEL)) is not None:
            return self.reject(cid, block)
        now = s.now()
        # Cancels may be re-armed after FAILED: cancelling twice is harmless at the venue.
        s.db.reserve_key(CANCEL, cid, s.mode, now, s.cfg.executor.key_retention_s)
        s.keys[(CANCEL, cid)] = idem.reserve(now)
        s.key_modes[(CANCEL, cid)] = s.mode
        s.counters["cancel_accepted"] += 1
        logger.info("executor: cancel {} ({})", cid, reason)
        s.spawn(self.send_while_sendable((CANCEL, cid), self._send_cancel_once),
                f"cancel-{cid}")
        return OrderAck(client_order_id=cid, status="accepted", key_status="PENDING",
                        reason=reason)

    def id_collision(self, cid: str, oid: int, symbol: str) -> bool:
        """True (and an incident, once, with the safety latch) when exchange id ``oid``
        already belongs to another of our orders: the venue reissued an id (e.g. a fresh
        simulator account) and the DB cannot hold both. Nothing is written for it."""
        other = self.s.db.order_by_exchange_id(oid)
        if other is None or other.client_order_id == cid:
            return False
        if (cid, oid) not in self._collisions:
            self._collisions.add((cid, oid))
            self.incidents.record(
                "id_collision", f"exchange order id {oid} reported for {cid} is already "
                f"held by {other.client_order_id} ({other.state}, created "
                f"{other.created_at:.0f})", symbol=symbol, client_order_id=cid,
                latch="safety_latch")
        return True

    # --- key transitions --------------------------------------------------------------
    def key_event(self, k: KeyId, event: idem.Event, *, persist: bool = True,
                  **order_update: Any) -> Key:
        s = self.s
        old = s.keys[k]
        policy = self.instant_policy if s.key_modes.get(k) == "dry-run" else self.policy
        new = idem.apply(old, event, policy)
        if persist:
            s.db.update_key(k[0], k[1], status=new.status, attempts=new.attempts,
                            probes=new.probes, next_probe_at=new.next_at,
                            settle_from=new.settle_from,
                            exchange_order_id=new.exchange_order_id, reason=new.reason,
                            now=s.now(), order_update=order_update or None)
        if new.terminal:
            s.keys.pop(k, None)
        else:
            s.keys[k] = new
        if new.status != old.status:
            prefix = "" if k[0] == SUBMIT else "cancel_"
            s.counters[prefix + new.status.lower()] += 1
        if order_update:
            self.publish_order(k[1], new.reason)
        return new

    def publish_order(self, cid: str, reason: str = "", only_in_state: str = "") -> None:
        o = self.s.db.get_order(cid)
        if o is None or (only_in_state and o.state != only_in_state):
            return
        self.s.dirty = True
        self.s.publish(OrderEvent(client_order_id=cid, intent_id=o.intent_id, symbol=o.symbol,
                                  side=o.side, state=o.state,  # type: ignore[arg-type]
                                  price=o.price, quantity=o.quantity,
                                  filled_quantity=o.filled_quantity,
                                  exchange_order_id=o.exchange_order_id,
                                  reason=reason or o.reason))

    # --- sending ----------------------------------------------------------------------
    async def send_while_sendable(
        self, k: KeyId, send_once: Callable[[KeyId], Awaitable[None]]
    ) -> None:
        """Send a key until it leaves the sendable phases (sent, refused, or given
        up), honouring its backoff between provably-unsent attempts."""
        while True:
            key = self.s.keys.get(k)
            if key is None or key.phase not in idem.SENDABLE_PHASES:
                return
            wait = key.next_at - self.s.now()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await send_once(k)

    async def _send_order_once(self, k: KeyId) -> None:
        s = self.s
        cid = k[1]
        order = s.db.get_order(cid)
        assert order is not None, f"order row of {cid} missing"
        now = s.now()
        if (block := self.gates.write_block(SUBMIT)) is not None:
            logger.warning("executor: {} not sent: {}", cid, block)
            self.key_event(k, idem.GateBlocked(now, block), state="FAILED",
                           reason=f"blocked:{block}")
            return
        # In memory only: persisting "sent" would cost a second fsync before every send,
        # and a restart treats every non-terminal key as maybe-sent anyway.
        self.key_event(k, idem.SendStarted(now), persist=False)
        s.counters["submitted"] += 1
        try:
            oid = await s.venue.submit(order.symbol, order.side, order.quantity, order.price,
                                       cid)
        except RejectedError as exc:
            logger.warning("executor: {} rejected: {}", cid, exc)
            self.key_event(k, idem.SendRejected(s.now(), f"rejected:{exc.kind}"),
                           state="REJECTED", reason=f"rejected:{exc.kind}")
            return
        except RetryableError as exc:
            new = self.key_event(k, idem.SendRetryable(s.now(), exc.kind,
                                                       exc.retry_after_s))
            logger.warning("executor: {} not sent ({}); {}", cid, exc.kind,
                           "giving up" if new.terminal else f"retry #{new.attempts + 1}")
            if new.terminal:
                s.db.update_order(cid, s.now(), state="FAILED", reason=new.reason)
                self.publish_order(cid, new.reason)
            return
        except Exception as exc:  # noqa: BLE001 - any other outcome may have reached it
            reason = getattr(exc, "kind", type(exc).__name__)
            logger.warning("executor: {} outcome unknown ({}); probing", cid, exc)
            self.key_event(k, idem.SendAmbiguous(s.now(), f"ambiguous:{reason}"),
                           state="UNKNOWN", reason=f"ambiguous:{reason}")
            return
        s.faults.hit("after_response")
        if self.id_collision(cid, oid, order.symbol):
            # On the venue, but its id is taken here: the key is settled (never re-sent),
            # the row stays without the id, the bot is latched until an operator looks.
            self.key_event(k, idem.SendSucceeded(s.now(), oid), state="OPEN",
                           reason="id_collision")
            return
        self.key_event(k, idem.SendSucceeded(s.now(), oid), state="OPEN",
                       exchange_order_id=oid)

    async def _send_cancel_once(self, k: KeyId) -> None:
        s = self.s
        cid = k[1]
        order = s.db.get_order(cid)
        assert order is not None and order.exchange_order_id is not None
        if (block := self.gates.write_block(CANCEL)) is not None:
            self.key_event(k, idem.GateBlocked(s.now(), block))
            return
        self.key_event(k, idem.SendStarted(s.now()), persist=False)
        s.counters["cancel_sent"] += 1
        try:
            await s.venue.cancel(order.exchange_order_id)
        except RejectedError as exc:
            # Typically already filled or canceled; the final state is fetched below.
            self.key_event(k, idem.SendRejected(s.now(), f"rejected:{exc.kind}"))
        except RetryableError as exc:
            self.key_event(k, idem.SendRetryable(s.now(), exc.kind, exc.retry_after_s))
            return
        except Exception as exc:  # noqa: BLE001
            self.key_event(k, idem.SendAmbiguous(s.now(), f"ambiguous:{exc!r}"[:200]))
            return
        else:
            if s.dry_run:
                # Nothing to read back: the cancel is the final word.
                self.key_event(k, idem.SendSucceeded(s.now(), order.exchange_order_id),
                               state="CANCELED", reason="canceled")
                return
            self.key_event(k, idem.SendSucceeded(s.now(), order.exchange_order_id))
        await self.refresh_order(cid)

    # --- the venue's word on one order ------------------------------------------------
    async def refresh_order(self, cid: str) -> None:
        """Best effort: fetch one order's state by exchange id and record it."""
        order = self.s.db.get_order(cid)
        if order is None or order.exchange_order_id is None:
            return
        try:
            eo = await self.s.venue.get_order(order.exchange_order_id)
        except BtcTurkError as exc:
            logger.info("executor: refresh of {} failed: {}", cid, exc)
            return
        self.record_exchange_order(order, eo)

    def record_exchange_order(self, order: OrderRow, eo: ExchangeOrder) -> bool:
        """Record the venue's word on one order; True when the row changed (and its
        event was published). ``order`` may be the row as it was before the await that
        fetched ``eo``: the row is read again, so a second reader of the same change
        (a cancel's read-back and a private-feed refresh, say) publishes nothing, and a
        read older than the row (still open, less filled) never takes it back."""
        if self.id_collision(order.client_order_id, eo.id, order.symbol):
            return False
        order = self.s.db.get_order(order.client_order_id) or order
        state, filled = exchange_view(eo)
        if filled < order.filled_quantity or (order.state in TERMINAL_ORDER_STATES
                                              and state not in TERMINAL_ORDER_STATES):
            self.s.counters["stale_order_reads"] += 1
            return False
        if (state, filled, eo.id) == (order.state, order.filled_quantity,
                                      order.exchange_order_id):
            return False
        self.s.db.update_order(order.client_order_id, self.s.now(), state=state,
                               filled_quantity=filled, exchange_order_id=eo.id)
        self.publish_order(order.client_order_id)
        return True


async def _let_the_send_start() -> None:
    """Yield once before announcing an accepted order (PENDING event and reply), which
    wakes half the system: the send task's first step signs the request and writes it
    (shared/btcturk/http.py writes on an idle connection before it first yields), so the
    order is on the wire first. Only an ordering hint: nothing depends on it for
    correctness (the reservation is durable before the step)."""
    await asyncio.sleep(0)
