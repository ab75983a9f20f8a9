"""Planted bugs: the proof that the simulation can fail. Each is a patch over one
production function, applied only in a simulation process that asks for it
(``--plant NAME``), so production code carries no test branch.

- ``send_before_durable``: the executor's reservation (key + order row) is committed a
  moment after the order is already on its way: a crash in between would leave an order
  on the exchange with no ledger row.
- ``ignore_kill_switch``: neither risk nor the executor honours the kill switch latch.
- ``double_fees``: net PnL subtracts fees twice (the bug issue 15 fixed in status/risk).
- ``venue_unsaved``: the venue (the exchange simulator) never commits its account after
  its start: only a venue crash shows it (the restart forgets every order and fill
  since), which ``db_matches_venue`` finds; the proof that a venue crash restarts from
  the state file and not from memory.
- ``ws_stale_trusted``: marketdata trusts a connected public WebSocket: a pair whose WS
  frames stopped while the socket is up is not polled by REST, its last WS book is
  republished as current instead ("no frame means no change", true of a diff feed that
  is alive, not of one that is stuck). The market moves on meanwhile; risk's own age
  check sees fresh stamps; ``fresh_data`` sees a book whose market the venue left long
  ago. Hunted under ``harsh`` (6 public feed freezes an hour) with ``--trading busy``
  (an order decided every few seconds).
- ``livelock``: from its 20th book on, risk's message handler spins without ever waiting
  for time (a busy loop): the simulated world stalls, which is the violation
  ``no_stall`` rather than a hang of the simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

PLANTS = ("send_before_durable", "ignore_kill_switch", "double_fees", "livelock",
          "venue_unsaved", "ws_stale_trusted")
COMMIT_DELAY_S = 0.2


def plant(name: str) -> Callable[[], None]:
    """Apply one planted bug; returns the function that removes it."""
    if name not in PLANTS:
        raise ValueError(f"unknown planted bug {name!r} (known: {', '.join(PLANTS)})")
    return {"send_before_durable": _send_before_durable,
            "ignore_kill_switch": _ignore_kill_switch,
            "double_fees": _double_fees, "livelock": _livelock,
            "venue_unsaved": _venue_unsaved, "ws_stale_trusted": _ws_stale_trusted}[name]()


def _patch(owner: Any, attr: str, value: Any) -> Callable[[], None]:
    old = owner.__dict__[attr]
    setattr(owner, attr, value)
    return lambda: setattr(owner, attr, old)


def _send_before_durable() -> Callable[[], None]:
    from actors.executor.db import ExecutorDB

    def reserve_order(self: ExecutorDB, order: Any, *, retention_s: float) -> None:
        now = order.created_at
        self.conn.execute("BEGIN")
        self.conn.execute(
            "INSERT INTO idempotency_keys(action_type, key, status, mode, settle_from, "
            "next_probe_at, created_at, updated_at, expires_at) "
            "VALUES ('submit', ?, 'PENDING', ?, ?, ?, ?, ?, ?)",
            (order.client_order_id, order.mode, now, now, now, now, now + retention_s))
        self._insert_order(order)
        asyncio.get_running_loop().call_later(COMMIT_DELAY_S, _commit, self)

    return _patch(ExecutorDB, "reserve_order", reserve_order)


def _commit(db: Any) -> None:
    try:
        if db.conn is not None and not db.conn.getautocommit():
            db.conn.execute("COMMIT")
    except Exception:  # noqa: BLE001 - the DB may be closed by a crash: the work is lost
        pass


def _ignore_kill_switch() -> Callable[[], None]:
    from actors.executor.gates import Gates
    from actors.risk import actor as risk_actor
    from actors.risk import decision

    original = decision.global_gates

    def global_gates(*args: Any, **kwargs: Any) -> list[str]:
        return [r for r in original(*args, **kwargs) if r != "gate:kill_switch"]

    undo = [
        _patch(Gates, "kill_switch_on", lambda self: bool(self.s.cfg.gates.kill_switch)),
        _patch(decision, "global_gates", global_gates),
        _patch(risk_actor, "global_gates", global_gates),
    ]
    return lambda: [u() for u in undo] and None


def _double_fees() -> Callable[[], None]:
    from shared import pnl

    def net(self: pnl.Pnl) -> Any:
        return self.realized + self.unrealized - 2 * self.fees

    return _patch(pnl.Pnl, "net", property(net))


def _livelock() -> Callable[[], None]:
    from actors.risk.actor import RiskActor

    original = RiskActor.on_message
    books = {"n": 0}

    async def on_message(self: RiskActor, topic: str, packet: Any) -> None:
        if topic.startswith("md.book."):
            books["n"] += 1
            while books["n"] > 20:  # noqa: ASYNC110 - the planted busy loop
                await asyncio.sleep(0)
        await original(self, topic, packet)

    return _patch(RiskActor, "on_message", on_message)


def _venue_unsaved() -> Callable[[], None]:
    from simulate.exchange import InProcessExchange

    def persist(self: InProcessExchange) -> None:
        if self.engine.changes:
            self.engine.take_changes()  # dropped: nothing reaches the state file

    return _patch(InProcessExchange, "persist", persist)


def _ws_stale_trusted() -> Callable[[], None]:
    from actors.marketdata.actor import MarketdataActor
    from actors.marketdata.freshness import needs_rest

    async def rest_loop(self: MarketdataActor) -> None:
        while True:
            now = self.clock.mono_ns()
            stale_ns = int(self.md.ws_stale_s * 1e9)
            due = []
            for s in self.symbols:
                age = self._ws_age(s, now)
                if self.ws_connected and age is not None and age > stale_ns:
                    # The bug: a quiet connected socket taken for an unchanged book.
                    self._emit_ws_book(self.books[s], now)
                    continue
                if needs_rest(source=self.md.source, rest_fallback=self.md.rest_fallback,
                              ws_connected=self.ws_connected, ws_age_ns=age,
                              ws_stale_ns=stale_ns):
                    due.append(s)
            if due:
                await asyncio.gather(*(self._poll(s) for s in due))
            await asyncio.sleep(self.md.rest_poll_interval_s)

    return _patch(MarketdataActor, "_rest_loop", rest_loop)
