"""The marketdata actor: public order books in, ``md.*`` out.

Sources: the BTCTurk WebSocket ``orderbook`` channel (primary, ``source = "ws"``) and
REST ``orderbook`` polling (``source = "rest"``, or the fallback for a symbol whose WS
data is down or older than ``ws_stale_s`` when ``rest_fallback`` is on).

Publishes ``BookSnapshot`` on ``md.book.<SYMBOL>`` for every new book, ``FeedStatus``
on ``md.status`` on every change and every ``status_interval_s``, and ``SymbolRules``
on ``md.rules.<SYMBOL>`` (exchangeinfo at start, refreshed and republished), and each
live public trade of the WebSocket ``trade`` channel as ``PublicTrade`` on
``md.trade.<SYMBOL>`` (REST polling has no trade feed: in fallback no trades are heard).
It is also the bus clock: a ``ClockTick`` on ``md.clock`` every ``clock_tick_ms``, on
which strategy and risk run their time-driven re-evaluations (recorded, so a replay
repeats them at the same point of the stream).

Fail closed: a symbol without new data for ``max_data_age_s`` is published stale; the
FSM is PAUSED_DATA while every symbol is stale. A REST answer identical to the last one
(same exchange timestamp and top levels, e.g. a frozen exchange) is not new data.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from actors.marketdata.book import LocalBook, is_sane
from actors.marketdata.freshness import FreshnessTracker, needs_rest
from actors.marketdata.rules import UnknownSymbols, rules_for
from actors.runtime import EXIT_CONFIG, Actor, FatalActorError, main_for
from bus.messages import (
    BookSnapshot,
    ClockTick,
    FeedStatus,
    MarketdataInfo,
    PublicTrade,
    SymbolFreshness,
    SymbolRules,
)
from shared.btcturk.client import BtcTurkClient
from shared.btcturk.errors import BtcTurkError
from shared.btcturk.ws import (
    BtcTurkWebSocket,
    OrderBookDiff,
    OrderBookSnapshot,
    TradeEvent,
    WsConnected,
    WsDisconnected,
)
from shared.files import ensure_private_dir
from shared.fsm import State

Level = tuple[Any, Any]
EXCHANGEINFO_ATTEMPTS = 5


TRADE_IDS_KEPT = 512  # per symbol: more than a join snapshot (50) can repeat


def norm_symbol(pair: str) -> str:
    return pair.replace("_", "").upper()


class MarketdataActor(Actor):
    name = "marketdata"

    def __init__(self, *args: Any, rest_client: BtcTurkClient | None = None,
                 ws_session: Any = None, **kwargs: Any) -> None:
        """``rest_client``: the simulation's client over its in-process exchange (one is
        made from the config otherwise); ``ws_session``: the same for the public
        WebSocket (an aiohttp-like session whose ``ws_connect`` reaches it; the socket
        makes its own otherwise)."""
        super().__init__(*args, **kwargs)
        self._given_client = rest_client
        self._ws_session = ws_session
        md = self.cfg.marketdata
        self.md = md
        self.symbols = [norm_symbol(s) for s in md.symbols]
        self.freshness = FreshnessTracker(self.symbols, int(md.max_data_age_s * 1e9))
        self.books = {s: LocalBook(s) for s in self.symbols}
        self.ws_last_mono: dict[str, int] = {}
        self.rest_last_key: dict[str, tuple[Any, ...]] = {}
        self.rules: dict[str, SymbolRules] = {}
        self.client: BtcTurkClient | None = None
        self.ws: BtcTurkWebSocket | None = None
        self.ws_connected = False
        self._ws_up = asyncio.Event()
        self._ws_joining: set[str] = set()  # symbols whose join snapshot is still due
        self._trade_ids: dict[str, dict[str, None]] = {}  # per symbol, recent published ids

    # --- lifecycle -----------------------------------------------------------------
    async def setup(self) -> None:
        # The rate journal: a restarted marketdata paces its REST polls from what its
        # previous run sent (BTCTurk still counts it), as the executor does.
        self.client = self._given_client or BtcTurkClient(
            self.cfg.rest_url, timeout_s=self.cfg.exchange.timeout_s,
            rate_journal=ensure_private_dir(self.cfg.data_path) / "marketdata.ratewindow",
            wall=lambda: self.clock.wall_ns() / 1e9)
        await self._load_rules(fatal_on_error=True)
        self._publish_rules()
        if self.md.source == "ws":
            await self._start_ws()
        self.spawn(self._rest_loop(), "rest-poll")
        self.spawn(self._status_loop(), "status")
        self.spawn(self._rules_loop(), "rules")
        if self.md.clock_tick_ms > 0:
            self.spawn(self._clock_loop(), "clock")
        # No book yet: fail closed until the first fresh data arrives.
        self.fsm.to(State.PAUSED_DATA, "waiting for first market data")

    async def teardown(self) -> None:
        if self.ws is not None:
            self.ws.stop()
        if self.client is not None:
            await self.client.close()

    # --- exchange rules --------------------------------------------------------------
    async def _load_rules(self, *, fatal_on_error: bool) -> None:
        assert self.client is not None
        delay = 0.5
        for attempt in range(1, EXCHANGEINFO_ATTEMPTS + 1):
            try:
                info = await self.client.exchange_info()
                break
            except BtcTurkError as exc:
                self.counters["exchangeinfo_errors"] += 1
                logger.warning("exchangeinfo attempt {} failed: {}", attempt, exc)
                if attempt == EXCHANGEINFO_ATTEMPTS:
                    if fatal_on_error:
                        raise FatalActorError(
                            f"exchangeinfo unavailable at {self.cfg.rest_url}: {exc}") from exc
                    return  # keep the previous rules; the next refresh tries again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        try:
            self.rules = rules_for(info, self.symbols)
        except UnknownSymbols as exc:
            raise FatalActorError(f"marketdata.symbols: {exc}", EXIT_CONFIG) from exc
        self.counters["exchangeinfo_loaded"] += 1

    def _publish_rules(self) -> None:
        for rules in self.rules.values():
            self.publish(rules)

    async def _rules_loop(self) -> None:
        last_refresh = self._mono()
        while True:
            await asyncio.sleep(self.md.rules_republish_s)
            if self._mono() - last_refresh >= self.md.exchangeinfo_refresh_s:
                await self._load_rules(fatal_on_error=False)
                last_refresh = self._mono()
            self._publish_rules()

    # --- WebSocket -------------------------------------------------------------------
    async def _start_ws(self) -> None:
        self.ws = BtcTurkWebSocket(
            self.cfg.ws_url,
            subscriptions=[(channel, s) for s in self.symbols
                           for channel in ("orderbook", "trade")],
            on_event=self._on_ws_event,
            stall_timeout_s=max(self.md.ws_stale_s, 1.0) * 2,
            session=self._ws_session,
            # Receive stamps on the actor's clock: freshness compares them with it.
            mono_ns=self.clock.mono_ns, wall_ns=self.clock.wall_ns,
        )
        self.spawn(self.ws.run(), "ws")
        try:
            await asyncio.wait_for(self._ws_up.wait(), self.md.ws_connect_timeout_s)
        except TimeoutError:
            if not self.md.rest_fallback:
                raise FatalActorError(
                    f"marketdata.source is 'ws' but no WebSocket connection to "
                    f"{self.cfg.ws_url} within {self.md.ws_connect_timeout_s}s and "
                    f"marketdata.rest_fallback is false") from None
            logger.warning("no WS connection to {} yet; using REST fallback", self.cfg.ws_url)

    async def _on_ws_event(self, event: Any) -> None:
        match event:
            case OrderBookSnapshot():
                self._on_ws_snapshot(event)
            case OrderBookDiff():
                self._on_ws_diff(event)
            case TradeEvent():
                self._on_ws_trade(event)
            case WsConnected():
                self._ws_joining = set(self.symbols)
                self.ws_connected = True
                self._ws_up.set()
                self.counters["ws_connects"] += 1
            case WsDisconnected():
                self.ws_connected = False
                self.counters["ws_disconnects"] += 1
            case _:
                pass

    def _on_ws_snapshot(self, ev: OrderBookSnapshot) -> None:
        book = self.books.get(norm_symbol(ev.pair))
        if book is None:
            self.counters["ws_unknown_symbol"] += 1
            return
        joining = book.symbol in self._ws_joining
        self._ws_joining.discard(book.symbol)
        if joining and book.has_data and ev.change_set == book.change_set:
            # The join snapshot after a reconnect repeats the book we already had: it
            # proves nothing about the market moving (a frozen exchange looks exactly
            # like this), so it does not renew freshness.
            self.counters["ws_join_unchanged"] += 1
            return
        book.apply_snapshot(ev.change_set, [(lv.price, lv.amount) for lv in ev.bids],
                            [(lv.price, lv.amount) for lv in ev.asks])
        self._emit_ws_book(book, ev.received_mono_ns)

    def _on_ws_diff(self, ev: OrderBookDiff) -> None:
        book = self.books.get(norm_symbol(ev.pair))
        if book is None:
            self.counters["ws_unknown_symbol"] += 1
            return
        applied = book.apply_diff(
            ev.change_set,
            [(d.price, d.amount, d.change) for d in ev.bids],
            [(d.price, d.amount, d.change) for d in ev.asks],
        )
        if not applied:
            self.counters["ws_diff_ignored"] += 1
            return
        self._emit_ws_book(book, ev.received_mono_ns)

    def _on_ws_trade(self, ev: TradeEvent) -> None:
        """A live trade goes on ``md.trade.<SYM>``. The join snapshot's trades (421) are
        history the strategy did not see happen, and after a reconnect they repeat
        trades already published, so they are skipped, and ids already published are
        not published again."""
        symbol = norm_symbol(ev.pair)
        if symbol not in self.books:
            self.counters["ws_unknown_symbol"] += 1
            return
        if ev.snapshot:
            self.counters["trades_snapshot_skipped"] += 1
            return
        seen = self._trade_ids.setdefault(symbol, {})
        if ev.trade_id in seen:
            self.counters["trades_repeated"] += 1
            return
        seen[ev.trade_id] = None
        if len(seen) > TRADE_IDS_KEPT:
            del seen[next(iter(seen))]  # dicts keep insertion order: the oldest goes
        try:
            trade = PublicTrade(symbol=symbol, trade_id=ev.trade_id, price=ev.price,
                                quantity=ev.amount, side=ev.side,  # type: ignore[arg-type]
                                exchange_ts_ms=ev.timestamp_ms, recv_wall_ns=self.clock.wall_ns())
        except ValueError:
            self.counters["trades_invalid"] += 1
            return
        self.publish(trade)
        self.counters["trades"] += 1

    def _emit_ws_book(self, book: LocalBook, recv_mono_ns: int) -> None:
        bids, asks = book.top(self.md.depth)
        if self._emit_book(book.symbol, bids, asks, "ws", 0, recv_mono_ns, book.change_set):
            self.ws_last_mono[book.symbol] = recv_mono_ns

    # --- REST ------------------------------------------------------------------------
    async def _rest_loop(self) -> None:
        while True:
            now = self.clock.mono_ns()
            due = [s for s in self.symbols if needs_rest(
                source=self.md.source, rest_fallback=self.md.rest_fallback,
                ws_connected=self.ws_connected, ws_age_ns=self._ws_age(s, now),
                ws_stale_ns=int(self.md.ws_stale_s * 1e9))]
            if due:
                await asyncio.gather(*(self._poll(s) for s in due))
            await asyncio.sleep(self.md.rest_poll_interval_s)

    def _ws_age(self, symbol: str, now_ns: int) -> int | None:
        last = self.ws_last_mono.get(symbol)
        return None if last is None else now_ns - last

    async def _poll(self, symbol: str) -> None:
        assert self.client is not None
        try:
            ob = await self.client.order_book(symbol, limit=self.md.depth)
        except BtcTurkError as exc:
            self.counters["rest_errors"] += 1
            logger.debug("orderbook {} failed: {}", symbol, exc)
            return
        recv_mono = self.clock.mono_ns()
        bids = [(lv.price, lv.amount) for lv in ob.bids[: self.md.depth]]
        asks = [(lv.price, lv.amount) for lv in ob.asks[: self.md.depth]]
        key = (ob.timestamp_ms, tuple(bids[:1]), tuple(asks[:1]), len(bids), len(asks))
        if self.rest_last_key.get(symbol) == key:
            # Same timestamp and top as last time: the exchange did not move (or is
            # frozen). Not new data, so freshness is not renewed.
            self.counters["rest_unchanged"] += 1
            return
        self.rest_last_key[symbol] = key
        self.counters["rest_books"] += 1
        self._emit_book(symbol, bids, asks, "rest", ob.timestamp_ms, recv_mono, None)

    # --- publishing ------------------------------------------------------------------
    def _emit_book(
        self, symbol: str, bids: list[Level], asks: list[Level], source: str,
        exchange_ts_ms: int, recv_mono_ns: int, change_set: int | None,
    ) -> bool:
        if not is_sane(bids, asks):
            self.counters["book_insane"] += 1
            return False
        now_mono = self.clock.mono_ns()
        recv_wall = self.clock.wall_ns() - (now_mono - recv_mono_ns)
        self.publish(BookSnapshot(
            symbol=symbol, bids=bids, asks=asks, source=source,  # type: ignore[arg-type]
            exchange_ts_ms=exchange_ts_ms, recv_wall_ns=recv_wall, recv_mono_ns=recv_mono_ns,
            age_ms=max(0, (now_mono - recv_mono_ns) // 1_000_000), change_set=change_set,
        ))
        self.counters[f"books_{source}"] += 1
        self.freshness.observe(symbol, source, recv_mono_ns)
        if self.fsm.state == State.PAUSED_DATA:
            self._publish_status(changed_only=True)
        return True

    async def _clock_loop(self) -> None:
        """Ticks on an absolute schedule (a late tick does not shift the later ones)."""
        interval = self.md.clock_tick_ms / 1000
        tick = ClockTick(interval_ms=self.md.clock_tick_ms)
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.publish(tick)
            self.counters["clock_ticks"] += 1
            due += interval
            now = loop.time()
            if due < now:  # fell behind (a stalled loop): go on from now, no burst
                due = now
            await asyncio.sleep(due - now)

    async def _status_loop(self) -> None:
        while True:
            self._publish_status(changed_only=False)
            # Check often enough to publish a change within ~250 ms of it happening
            # (max_data_age_s is seconds); a faster tick costs idle CPU in every actor.
            for _ in range(max(1, int(self.md.status_interval_s / 0.25))):
                await asyncio.sleep(0.25)
                self._publish_status(changed_only=True)

    def _publish_status(self, *, changed_only: bool) -> None:
        now = self.clock.mono_ns()
        statuses, changed = self.freshness.evaluate(now)
        for st in changed if changed_only else statuses:
            self.publish(FeedStatus(symbol=st.symbol, fresh=st.fresh, source=st.source,
                                    age_ms=st.age_ms, reason=st.reason))
        for st in changed:
            self.counters["status_fresh" if st.fresh else "status_stale"] += 1
            log = logger.info if st.fresh else logger.warning
            log("md {} {} (source {}, age {} ms) {}", st.symbol,
                "fresh" if st.fresh else "STALE", st.source, st.age_ms, st.reason)
        self._update_fsm(any(st.fresh for st in statuses))

    def _update_fsm(self, any_fresh: bool) -> None:
        state = self.fsm.state
        if any_fresh and state == State.PAUSED_DATA:
            self.fsm.to(State.READY, "market data fresh")
        elif not any_fresh and state == State.READY:
            self.fsm.to(State.PAUSED_DATA, "all symbols stale")

    def heartbeat_info(self) -> MarketdataInfo:
        now = self.clock.mono_ns()
        symbols = []
        for s in self.symbols:
            st = self.freshness.status(s, now)
            symbols.append(SymbolFreshness(symbol=s, fresh=st.fresh, source=st.source,
                                           age_ms=st.age_ms))
        return MarketdataInfo(source=self.md.source, ws_connected=self.ws_connected,
                              symbols=symbols)

    def heartbeat_counters(self) -> dict[str, int]:
        out = {} if self.ws is None else {f"ws_{k}": v for k, v in self.ws.counters.items()}
        if self.client is not None:  # REST answers by status code (429s included)
            out.update({f"http_{code}": n for code, n in self.client.http_statuses.items()})
        return out


def main() -> None:
    main_for(MarketdataActor)


if __name__ == "__main__":
    main()
