"""The simulator against BTCTurk's own swagger files (exchange_sim/swagger/).

The tests iterate the swagger files themselves, never a hand-written endpoint list: every
documented path and method is routed (modelled, or a loud 501, never 404/405), and every
modelled operation answers 200 with a body that validates against the documented schema.

Two documented deviations of the real API from its swagger are applied when validating
(btcturk-api.md, real bodies): ``code`` is an integer (0 on success), not the C# enum
name the generator wrote; and where the schema is not an envelope (no ``data`` property)
the real answer still is one, so its ``data`` is validated. ``/api/v2/ticker/currency``
answers a list of the documented ticker objects (see the test below).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV2SpecValidator
from openapi_spec_validator.validation.exceptions import DuplicateOperationIDError

from exchange_sim import start_simulator
from exchange_sim.catalog import SWAGGER_FILES, Operation, operations, swagger
from exchange_sim.options import DEFAULT_API_KEY, DEFAULT_API_SECRET
from shared.btcturk.auth import auth_headers

# What the simulator models: the API-key (v1) trading API and the public market data.
# Everything else in the files (the web/mobile API: KYC, cards, deposits, withdrawals,
# alarms...) is routed to 501 NOT_MODELLED_BY_SIMULATOR, listed in the README.
MODELLED_V1_TAGS = {"Balance", "OrderV1", "Trade", "UserTransactions"}
MODELLED_V2_TAGS = {"Ticker", "OrderBook", "Trade", "Ohlc", "Server"}
NOT_MODELLED_IN_SCOPE = {
    ("GET", "/api/v2/server/mobile/version"),  # the mobile app's update check
    ("GET", "/api/v2/ohlc/volumes/btc"),  # undocumented body (no schema, not in the docs)
}
PATH_VALUES = {"id": "1", "language": "en", "currencySymbol": "BTC", "slug": "x",
               "cardId": "1", "card-id": "1", "fileId": "1", "reference": "x",
               "code": "x", "seoUrl": "x", "currency": "TRY", "pairSymbol": "BTCTRY"}
QUERY_VALUES = {"pairSymbol": "BTCTRY", "symbol": "TRY", "last": "5", "limit": "5"}


def modelled(op: Operation) -> bool:
    if (op.method, op.template) in NOT_MODELLED_IN_SCOPE:
        return False
    tags = MODELLED_V1_TAGS if op.source.endswith("v1.swagger.json") else MODELLED_V2_TAGS
    return bool(set(op.tags) & tags) and op.template.startswith("/api/")


@pytest.mark.parametrize("name", SWAGGER_FILES)
def test_the_copied_swagger_files_are_valid_swagger(name: str) -> None:
    # BTCTurk's generator reuses operationIds (e.g. "Get" on many paths): the only
    # deviation tolerated; every other structural error fails the test.
    errors = [e for e in OpenAPIV2SpecValidator(swagger(name)).iter_errors()
              if not isinstance(e, DuplicateOperationIDError)]
    assert errors == []


def _schema_for(op: Operation) -> dict[str, Any] | None:
    schema = op.spec.get("responses", {}).get("200", {}).get("schema")
    if not schema:
        return None
    definitions = dict(swagger(op.source).get("definitions", {}))
    for name, definition in list(definitions.items()):
        if name.startswith("ReturnModel[") and "code" in definition.get("properties", {}):
            props = dict(definition["properties"])
            props["code"] = {"type": ["integer", "string"]}
            definitions[name] = {**definition, "properties": props}
    return {**schema, "definitions": definitions}


class Caller:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.stamps: Iterator[int] = itertools.count(int(time.time() * 1000))

    async def call(self, method: str, path: str, params: dict[str, str] | None = None,
                   body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = auth_headers(DEFAULT_API_KEY, DEFAULT_API_SECRET, next(self.stamps))
        async with self.session.request(method, self.base + path, params=params, json=body,
                                        headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, text


def _path(op: Operation, values: dict[str, str]) -> str:
    path = op.template
    for key, value in {**PATH_VALUES, **values}.items():
        path = path.replace("{" + key + "}", value)
    return path


def _query(op: Operation) -> dict[str, str]:
    names = {p["name"] for p in op.spec.get("parameters", []) if p.get("in") == "query"}
    return {k: v for k, v in QUERY_VALUES.items() if k in names}


async def _exercise() -> tuple[list[tuple[Operation, int, Any]], dict[str, Any]]:
    handle = await start_simulator(random_walk=False, seed=4)
    results = []
    try:
        async with aiohttp.ClientSession() as session:
            c = Caller(session, handle.base_url)
            # Something to look at: one fill, one resting order.
            book = handle.sim.market.books["BTCTRY"]
            ask, bid = book.best_ask(), book.best_bid()
            assert ask is not None and bid is not None
            status, filled = await c.call("POST", "/api/v1/order", body={
                "pairSymbol": "BTCTRY", "orderType": "buy", "orderMethod": "limit",
                "price": str(ask), "quantity": "0.001", "newOrderClientId": "conf-fill"})
            assert status == 200, filled
            fill_id = str(handle.sim.engine.fills[0].id)
            status, resting = await c.call("POST", "/api/v1/order", body={
                "pairSymbol": "BTCTRY", "orderType": "buy", "orderMethod": "limit",
                "price": str(bid - 100_000), "quantity": "0.001"})
            assert status == 200, resting
            resting_id = str(resting["data"]["id"])
            for op in operations():
                values = {"id": fill_id if "transactions" in op.template else resting_id}
                body = None
                params = _query(op)
                if (op.method, op.template) == ("POST", "/api/v1/order"):
                    body = {"pairSymbol": "BTCTRY", "orderType": "sell", "orderMethod": "limit",
                            "price": str(ask + 100_000), "quantity": "0.001"}
                if (op.method, op.template) == ("DELETE", "/api/v1/order"):
                    params = {"id": resting_id}
                status, answer = await c.call(op.method, _path(op, values), params, body)
                results.append((op, status, answer))
            extras = {
                "405": await c.call("PUT", "/api/v1/openOrders"),
                "404": await c.call("GET", "/api/v2/no/such/thing"),
                "kline": await c.call("GET", "/v1/klines/history",
                                      {"symbol": "BTCTRY", "resolution": "60"}),
                "graph": await c.call("GET", "/v1/ohlcs", {"pair": "BTCTRY"}),
                "ticker": await c.call("GET", "/api/v2/ticker", {"pairSymbol": "BTCTRY"}),
                "trades": await c.call("GET", "/api/v2/trades",
                                       {"pairSymbol": "BTCTRY", "last": "50"}),
                "currency": await c.call("GET", "/api/v2/ticker/currency", {"symbol": "USDT"}),
            }
    finally:
        await handle.close()
    return results, extras


@pytest.fixture(scope="module")
def exercised() -> tuple[list[tuple[Operation, int, Any]], dict[str, Any]]:
    return asyncio.run(_exercise())


def test_every_documented_operation_is_routed(exercised: Any) -> None:
    results, _ = exercised
    assert len(results) == len(operations()) > 150
    unrouted = [(op.method, op.template, status) for op, status, _ in results
                if status in (404, 405)]
    assert unrouted == []
    for op, status, answer in results:
        if not modelled(op):
            assert status == 501, (op.method, op.template, status, answer)
            assert answer["message"] == "NOT_MODELLED_BY_SIMULATOR"


def test_modelled_operations_answer_and_validate_against_the_swagger(exercised: Any) -> None:
    results, _ = exercised
    checked = 0
    for op, status, answer in results:
        if not modelled(op):
            continue
        assert status == 200, (op.method, op.template, status, answer)
        schema = _schema_for(op)
        if schema is None:
            continue  # the swagger documents no body here: btcturk-api.md's shapes apply
        is_envelope = "data" in swagger(op.source)["definitions"].get(
            schema.get("$ref", "").rsplit("/", 1)[-1], {}).get("properties", {})
        instance = answer if is_envelope or not isinstance(answer, dict) or \
            "data" not in answer else answer["data"]
        if isinstance(instance, list) and schema.get("$ref", "").endswith("TickerApiModel"):
            # ticker/currency: the swagger names one TickerApiModel, but a currency quotes
            # several pairs; like /ticker, the simulator answers a list of them (our
            # decision where the file cannot be right), each one validated.
            for item in instance:
                jsonschema.validate(item, schema)
        else:
            jsonschema.validate(instance, schema)
        checked += 1
    assert checked >= 6  # balances, order, openOrders, allOrders, orderBook, ticker, ohlc


def test_http_semantics_and_chart_endpoints(exercised: Any) -> None:
    _, extras = exercised
    assert extras["405"][0] == 405 and extras["405"][1]["message"] == "METHOD_NOT_ALLOWED"
    assert extras["404"][0] == 404
    status, kline = extras["kline"]
    assert status == 200 and kline["s"] == "ok" and len(kline["t"]) >= 20  # a day of hours
    assert kline["t"] == sorted(kline["t"])
    status, graph = extras["graph"]
    assert status == 200 and isinstance(graph, list) and graph[-1]["pair"] == "BTCTRY"
    status, currency = extras["currency"]
    assert status == 200 and [r["pair"] for r in currency["data"]] == []  # nothing in USDT


def test_a_fresh_market_is_coherent(exercised: Any) -> None:
    """Ticker, trades and candles come from one tape: last is the last trade, inside
    [low, high], on the pair's grid; there are trades from the first second."""
    _, extras = exercised
    row = extras["ticker"][1]["data"][0]
    trades = extras["trades"][1]["data"]
    assert len(trades) == 50
    last, low, high = (Decimal(str(row[k])) for k in ("last", "low", "high"))
    assert low <= last <= high
    assert last % 10 == 0  # BTCTRY's grid is its 10 TRY tick
    # The newest print in /trades is the user's own fill or the seeded last trade.
    assert Decimal(trades[0]["price"]) == last
    kline = extras["kline"][1]
    assert Decimal(str(kline["c"][-1])) == last
    assert max(Decimal(str(h)) for h in kline["h"]) <= high or len(kline["h"]) > 24


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_no_number_string_in_any_answer_has_an_exponent(exercised: Any) -> None:
    """BTCTurk writes decimals positionally; a client's decimal pattern (ours:
    ``^\\d{0,12}(\\.\\d{1,16})?$``) refuses "1E-13", which exchangeinfo's minPrice was."""
    results, extras = exercised
    exponent = re.compile(r"^[-+]?\d+(\.\d+)?[eE][-+]?\d+$")
    answers = [a for _, _, a in results] + [a for _, a in extras.values()]
    bad = sorted({s for a in answers for s in _strings(a) if exponent.match(s)})
    assert bad == []
