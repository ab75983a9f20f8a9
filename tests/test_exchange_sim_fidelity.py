"""Simulator fidelity to BTCTurk's documented behaviour (issue 17): stop orders, generated
client ids, filters, WebSocket channels and ids, seeded history."""

from __future__ import annotations

import asyncio
import itertools
import time
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec

from exchange_sim import SimOptions, Simulator, start_simulator
from exchange_sim.engine import OrderRequest, SimReject
from exchange_sim.options import DEFAULT_API_KEY, DEFAULT_API_SECRET
from shared.btcturk.auth import auth_headers

D = Decimal


def _sim(**kw: Any) -> Simulator:
    return Simulator(SimOptions(seed=9, random_walk=False, **kw))


def _book(sim: Simulator, symbol: str, bid: str, ask: str, amount: str = "10") -> None:
    sim.market.set_book(symbol, [[D(bid), D(amount)]], [[D(ask), D(amount)]], sim.now_ms())


def _print(sim: Simulator, symbol: str, price: str) -> None:
    """A public trade at ``price`` (moves "last"), then the engine's tick."""
    book = sim.market.books[symbol]
    sim.market.record_trade(book, D(price), D("0.1"), 0, sim.now_ms())
    sim.engine.match_resting(symbol)


def test_stop_limit_triggers_into_a_new_limit_order_with_the_same_client_id() -> None:
    sim = _sim()
    _book(sim, "SOLTRY", "7000", "7010")
    e = sim.engine
    stop = e.submit(OrderRequest("SOLTRY", "buy", "stoplimit", D("7200"), D("1"), "brk",
                                 stop_price=D("7100")))
    assert stop.status == "Untouched" and stop.is_stop
    assert stop in e.open_orders_of("SOLTRY") and stop not in e.open_orders["SOLTRY"]
    locked = e.account.locked["TRY"]
    assert locked >= D("7200")  # funds reserved like a limit order
    _print(sim, "SOLTRY", "7099")
    assert stop.status == "Untouched"  # not reached yet
    _book(sim, "SOLTRY", "7100", "7300")
    _print(sim, "SOLTRY", "7100")
    assert stop.status == "Canceled"
    child = max(e.orders.values(), key=lambda o: o.id)
    assert child.id != stop.id and child.client_id == "brk" and child.method == "limit"
    assert child.price == D("7200") and child.status == "Untouched"  # rests under 7300


def test_stop_market_sell_triggers_a_market_order() -> None:
    sim = _sim()
    _book(sim, "SOLTRY", "7000", "7010")
    e = sim.engine
    stop = e.submit(OrderRequest("SOLTRY", "sell", "stopmarket", None, D("1"), "sl",
                                 stop_price=D("6900")))
    _book(sim, "SOLTRY", "6890", "6900")
    _print(sim, "SOLTRY", "6895")
    assert stop.status == "Canceled"
    child = max(e.orders.values(), key=lambda o: o.id)
    assert child.method == "market" and child.status == "Closed" and child.client_id == "sl"
    assert e.fills[-1].price == D("6890") and e.fills[-1].order_id == child.id


def test_stop_that_would_trigger_at_once_is_refused() -> None:
    sim = _sim()
    _book(sim, "SOLTRY", "7000", "7010")
    for side, stop, code in (("buy", "7010", 1124), ("sell", "7000", 1125)):
        try:
            sim.engine.submit(OrderRequest("SOLTRY", side, "stoplimit", D("7005"), D("1"), "x",
                                           stop_price=D(stop)))
            raise AssertionError("accepted a stop that triggers at once")
        except SimReject as exc:
            assert exc.code == code
    try:
        sim.engine.submit(OrderRequest("SOLTRY", "buy", "stoplimit", D("7005"), D("1"), "x",
                                       stop_price=D("7100.123")))
        raise AssertionError("accepted a stop price with too many decimals")
    except SimReject as exc:
        assert exc.code == 1128


def test_missing_client_order_id_gets_a_guid() -> None:
    sim = _sim()
    req = sim.engine.parse_request({"pairSymbol": "SOLTRY", "orderType": "buy",
                                    "orderMethod": "limit", "price": "6000", "quantity": "1"})
    assert len(req.client_id) == 36 and req.client_id.count("-") == 4
    other = sim.engine.parse_request({"pairSymbol": "SOLTRY", "orderType": "buy",
                                      "orderMethod": "limit", "price": "6000", "quantity": "1"})
    assert other.client_id != req.client_id


def test_limit_price_band_follows_the_last_price() -> None:
    sim = _sim()
    last = sim.market.books["ETHTRY"].last_price()
    for price, code in ((last * 11, 1226), ((last / 11).quantize(D("0.01")), 1227)):
        try:
            sim.engine.submit(OrderRequest("ETHTRY", "buy", "limit", price, D("0.01"), "x"))
            raise AssertionError("accepted a price outside the band")
        except SimReject as exc:
            assert exc.code == code


def test_seeded_history_is_reproducible_and_coherent() -> None:
    a, b = _sim(), _sim()
    for symbol in a.market.books:
        ta, tb = a.market.books[symbol].tape, b.market.books[symbol].tape
        # Same --seed, same past (candle times move with the start minute, nothing else).
        assert [r[1:] for r in ta.snapshot()] == [r[1:] for r in tb.snapshot()]
        grid = a.market.books[symbol].spec.grid
        assert all(D(str(row[4])) % grid == 0 for row in ta.snapshot())  # closes on grid
        stats = ta.stats(a.now_ms())
        assert stats is not None and stats.low <= stats.last <= stats.high
        assert stats.volume > 0 and stats.low <= stats.average <= stats.high
    c = Simulator(SimOptions(seed=10, random_walk=False))
    assert c.market.books["BTCTRY"].tape.snapshot() != a.market.books["BTCTRY"].tape.snapshot()


class _Ws:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, msg_type: int, body: dict[str, Any]) -> None:
        await self.ws.send_str(msgspec.json.encode([msg_type, {"type": msg_type, **body}]).decode())

    async def until(self, msg_type: int) -> dict[str, Any]:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=deadline - time.monotonic())
            frame = msgspec.json.decode(msg.data)
            if frame[0] == msg_type:
                return frame[1]
        raise AssertionError(f"no {msg_type} frame")


def test_ws_obdiff_tradeview_balance_update_and_pair_ids() -> None:
    async def go() -> None:
        handle = await start_simulator(random_walk=False, seed=3, book_interval_ms=50)
        sim = handle.sim
        try:
            async with aiohttp.ClientSession() as s, s.ws_connect(handle.ws_url) as raw:
                ws = _Ws(raw)
                await ws.until(991)
                await ws.send(151, {"channel": "obdiff", "event": "SOLTRY", "join": True})
                assert (await ws.until(100))["message"] == "join|obdiff:SOLTRY"
                full = await ws.until(431)
                asks = {D(r["P"]): D(r["A"]) for r in full["AO"]}
                bids = {D(r["P"]): D(r["A"]) for r in full["BO"]}
                sim.market.set_book("SOLTRY", [[D("7000"), D("3")]],
                                    [[D("7010"), D("2")], [D("7020"), D("1")]], sim.now_ms())
                diff = await ws.until(432)
                for side, levels in (("AO", asks), ("BO", bids)):
                    for row in diff[side]:
                        price, amount = D(row["P"]), D(row["A"])
                        assert amount > 0  # A never becomes 0
                        if row["CP"] == 3:
                            levels.pop(price)
                        else:
                            assert (row["CP"] == 1) == (price not in levels)
                            levels[price] = amount
                assert asks == {D("7010"): D("2"), D("7020"): D("1")}
                assert bids == {D("7000"): D("3")}

                await ws.send(151, {"channel": "tradeview", "event": "SOLTRY_60", "join": True})
                assert (await ws.until(100))["ok"] is True
                await ws.send(151, {"channel": "tradeview", "event": "SOLTRY_1M", "join": True})
                assert (await ws.until(100))["ok"] is False  # a month is no fixed bucket

                stamps = itertools.count(int(time.time() * 1000))
                login = auth_headers(DEFAULT_API_KEY, DEFAULT_API_SECRET, 3000)
                await ws.send(114, {"publicKey": DEFAULT_API_KEY, "nonce": 3000,
                                    "timestamp": next(stamps),
                                    "signature": login["X-Signature"]})
                assert (await ws.until(114))["ok"] is True
                sim.engine.submit(OrderRequest("SOLTRY", "buy", "limit", D("7010"), D("1"), "w"))
                inserted = await ws.until(451)
                balance = await ws.until(201)  # after the fill's 441 and 423
                assert balance["userId"] == sim.engine.user_id
                candle = await ws.until(428)
                assert candle["P"] == "SOLTRY" and candle["R"] == "60"
                assert D(candle["C"]) == D("7010") and candle["D"] % 3600 == 0
            ids = {s: sim.engine.pair_id(s) for s in sim.market.books}
            assert inserted["pairId"] == ids["SOLTRY"] == 3  # exchangeinfo id, ticker PId
        finally:
            await handle.close()

    asyncio.run(go())


def test_rest_filters_type_symbol_order_id_and_page() -> None:
    async def go() -> None:
        handle = await start_simulator(random_walk=False, seed=3)
        sim = handle.sim
        stamps = itertools.count(int(time.time() * 1000))

        async def get(path: str, params: list[tuple[str, str]]) -> Any:
            headers = auth_headers(DEFAULT_API_KEY, DEFAULT_API_SECRET, next(stamps))
            async with aiohttp.ClientSession() as s, s.get(handle.base_url + path,
                                                           params=params,
                                                           headers=headers) as r:
                assert r.status == 200
                return (await r.json())["data"]

        try:
            _book(sim, "SOLTRY", "7000", "7010")
            _book(sim, "ETHTRY", "139000", "139100")
            sim.engine.submit(OrderRequest("SOLTRY", "buy", "limit", D("7010"), D("1"), "a"))
            sim.engine.submit(OrderRequest("SOLTRY", "sell", "limit", D("7000"), D("1"), "b"))
            sim.engine.submit(OrderRequest("ETHTRY", "buy", "limit", D("139100"), D("0.01"), "c"))
            path = "/api/v1/users/transactions/trade"
            assert len(await get(path, [])) == 3
            sells = await get(path, [("type", "sell")])
            assert [f["orderType"] for f in sells] == ["sell"]
            assert len(await get(path, [("type", "buy"), ("type", "sell")])) == 3
            eth = await get(path, [("symbol", "eth")])
            assert [f["numeratorSymbol"] for f in eth] == ["ETH"]
            assert len(await get(path, [("symbol", "try")])) == 3
            for i in range(4):
                sim.engine.submit(
                    OrderRequest("SOLTRY", "buy", "limit", D("6000"), D("1"), f"r{i}"))
            ids = sorted(sim.engine.orders)
            newer = await get("/api/v1/allOrders", [("orderId", str(ids[3]))])
            assert sorted(o["id"] for o in newer) == ids[3:]
            page1 = await get("/api/v1/allOrders", [("limit", "3"), ("page", "1")])
            page2 = await get("/api/v1/allOrders", [("limit", "3"), ("page", "2")])
            page3 = await get("/api/v1/allOrders", [("limit", "3"), ("page", "3")])
            assert [o["id"] for o in page1 + page2 + page3] == ids[::-1]
        finally:
            await handle.close()

    asyncio.run(go())


def test_fee_tiers_follow_the_thirty_day_volume() -> None:
    from exchange_sim.fees import FeeScheduleError, parse_schedule

    tiers = parse_schedule("0:0.001/0.002,10000:0.0005/0.001")
    sim = Simulator(SimOptions(seed=9, random_walk=False, fee_tiers=tiers))
    _book(sim, "SOLTRY", "7000", "7010", amount="100")
    e = sim.engine
    first = e.submit(OrderRequest("SOLTRY", "buy", "limit", D("7010"), D("1"), "t1"))
    assert e.fills[-1].fee == D("14.02")  # 0.2 % taker on 7010 (volume 0 before it)
    assert first.status == "Closed"
    e.submit(OrderRequest("SOLTRY", "buy", "limit", D("7010"), D("1"), "t2"))
    assert e.fills[-1].fee == D("14.02")  # 7010 < 10000: still the first tier
    e.submit(OrderRequest("SOLTRY", "buy", "limit", D("7010"), D("1"), "t3"))
    assert e.fills[-1].fee == D("7.01")  # 14020 traded: the second tier's 0.1 %
    # Buys reserve at the highest taker rate, whatever the tier now.
    resting = e.submit(OrderRequest("SOLTRY", "buy", "limit", D("6000"), D("1"), "t4"))
    assert resting.locked == D("6012")
    for bad in ("10:0.1/0.2", "0:0.1", "0:2/0.1"):
        try:
            parse_schedule(bad)
            raise AssertionError(f"accepted {bad}")
        except FeeScheduleError:
            pass


def test_exchangeinfo_and_balances_carry_btcturks_values() -> None:
    """The values a third-party client reads (btcturk-api.md 4.2 and 4.6), not only the
    types the swagger checks: BTCTRY's scales and PRICE_FILTER as BTCTurk shows them, all
    four order methods (stops are modelled), balances' asset names, precision and dots."""
    async def go() -> tuple[Any, Any]:
        handle = await start_simulator(random_walk=False, seed=3)
        headers = auth_headers(DEFAULT_API_KEY, DEFAULT_API_SECRET, int(time.time() * 1000))
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(handle.base_url + "/api/v2/server/exchangeinfo") as r:
                    info = (await r.json())["data"]
                async with s.get(handle.base_url + "/api/v1/users/balances",
                                 headers=headers) as r:
                    balances = (await r.json())["data"]
            return info, balances
        finally:
            await handle.close()

    info, balances = asyncio.run(go())
    btc = next(s for s in info["symbols"] if s["name"] == "BTCTRY")
    assert (btc["numeratorScale"], btc["denominatorScale"], btc["hasFraction"]) == (8, 2, False)
    assert btc["filters"] == [{
        "filterType": "PRICE_FILTER", "minPrice": "0.0000000000001", "maxPrice": "10000000",
        "tickSize": "10", "minExchangeValue": "99.91", "minAmount": None, "maxAmount": None}]
    assert btc["orderMethods"] == ["MARKET", "LIMIT", "STOP_MARKET", "STOP_LIMIT"]
    assert (btc["numerator"], btc["denominator"], btc["status"]) == ("BTC", "TRY", "TRADING")
    rows = {b["asset"]: b for b in balances}
    assert rows["TRY"]["assetname"] == "Türk Lirası" and rows["TRY"]["precision"] == 2
    assert rows["BTC"]["assetname"] == "Bitcoin" and rows["BTC"]["precision"] == 8
    for row in rows.values():
        assert isinstance(row["precision"], int)
        for key in ("balance", "free", "locked", "orderFund", "requestFund"):
            assert isinstance(row[key], str) and "," not in row[key]  # dots, never commas
            D(row[key])
        assert D(row["balance"]) == D(row["free"]) + D(row["locked"])


def test_default_fees_are_ccxts_btcturk_figures() -> None:
    """0.05 % maker / 0.09 % taker (ccxt's btcturk fees.trading): a marketable buy pays
    the taker rate on its notional."""
    sim = _sim(balances={"TRY": D("100000")})
    _book(sim, "SOLTRY", "7000", "7010")
    sim.engine.submit(OrderRequest("SOLTRY", "buy", "limit", D("7010"), D("1"), "t"))
    assert sim.engine.fills[-1].fee == D("7010") * D("0.0009")
    tiers = sim.engine.fees.tiers
    assert [(t.min_volume, t.maker, t.taker) for t in tiers] == [(0, D("0.0005"), D("0.0009"))]
