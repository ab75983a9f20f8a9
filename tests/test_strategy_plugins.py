"""The strategy plug-in API: loading by name, dotted path and entry point; parameters
validated from [strategy] (exit 2 naming the field); a raising plug-in is contained;
the second shipped strategy (inventory-skewed market maker)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from actors.strategy import gating, loader
from actors.strategy.api import Cancel, Place, Strategy, SymbolContext
from actors.strategy.host import StrategyHost
from actors.strategy.plugins.inventory_mm import InventoryMarketMaker, InventoryMMParams
from actors.strategy.plugins.profit_aware import ProfitAware
from bus.messages import (
    Balance,
    BookSnapshot,
    KeyCounts,
    Latches,
    OpenOrder,
    PortfolioSnapshot,
    Position,
    SymbolRules,
)
from shared.config import ConfigError, StrategyConfig, load_config
from tests.helpers import REPO, SUPERVISOR

D = Decimal


def rules(symbol: str) -> SymbolRules:
    return SymbolRules(symbol=symbol, base=symbol[:3], quote="TRY", price_scale=2,
                       qty_scale=8, tick_size=D("0.01"), min_price=D(0), max_price=D(0),
                       min_total=D(0))


def book(symbol: str, bid: str, ask: str) -> BookSnapshot:
    return BookSnapshot(symbol=symbol, bids=[(D(bid), D(1))], asks=[(D(ask), D(1))],
                        source="ws", exchange_ts_ms=0, recv_wall_ns=0, recv_mono_ns=0,
                        age_ms=0)


def host_for(strategy: Strategy, *, positions=(), open_orders=(), try_free="10000",
             base_free="0") -> StrategyHost:
    h = StrategyHost(strategy, boot=3)
    for sym in ("BTCTRY", "ETHTRY"):
        h.apply_rules(rules(sym))
        h.apply_book(book(sym, "1000", "1001"), 5)
    h.apply_snapshot(PortfolioSnapshot(
        positions=list(positions), open_orders=list(open_orders), latches=Latches(),
        keys=KeyCounts(), balances=[Balance(asset="TRY", free=D(try_free), locked=D(0)),
                                    Balance(asset="BTC", free=D(base_free), locked=D(0))]),
        since_mono=0)
    return h


# --- loading and parameters -----------------------------------------------------------------


def test_shipped_strategies_load_by_name_and_by_dotted_path():
    assert loader.resolve("profit_aware") is ProfitAware
    assert loader.resolve("actors.strategy.plugins.inventory_mm:InventoryMarketMaker") is (
        InventoryMarketMaker)
    s = loader.load_strategy(StrategyConfig(plugin="inventory_mm",
                                            params={"half_spread_bps": "25"}),
                             overrides={"quote_notional_try": "200"})
    assert s.params == InventoryMMParams(half_spread_bps=25, quote_notional_try=D(200))


def test_installed_plugins_are_found_by_entry_point(monkeypatch):
    class EP:
        name, value = "mine", "actors.strategy.plugins.profit_aware:ProfitAware"

    monkeypatch.setattr(loader, "entry_points", lambda group: [EP()] if (
        group == loader.ENTRY_POINT_GROUP) else [])
    assert loader.resolve("mine") is ProfitAware


@pytest.mark.parametrize(("plugin", "params", "field"), [
    ("nosuch", {}, "strategy.plugin"),
    ("nosuch.module:X", {}, "strategy.plugin"),
    ("shared.config:Config", {}, "strategy.plugin"),  # not a Strategy
    ("profit_aware", {"entry_notional_try": "lots"}, "strategy.entry_notional_try"),
    ("profit_aware", {"take_profit_fraction": "2"}, "take_profit_fraction"),
    ("profit_aware", {"half_spread_bps": 1}, "strategy.half_spread_bps"),  # other plug-in's
    ("inventory_mm", {"max_inventory_try": "-1"}, "max_inventory_try"),
])
def test_bad_plugin_or_parameters_are_config_errors_naming_the_field(plugin, params, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        loader.load_strategy(StrategyConfig(plugin=plugin, params=params))


def test_strategy_table_keys_become_plugin_parameters(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[strategy]\nplugin = "inventory_mm"\nthrottle_ms = 100\n'
                    'skew_bps = 40\n')
    cfg = load_config(path)
    assert cfg.strategy.throttle_ms == 100 and cfg.strategy.params == {"skew_bps": 40}
    assert loader.load_strategy(cfg.strategy).params.skew_bps == 40  # type: ignore[attr-defined]


def test_start_and_the_actor_exit_2_naming_a_bad_parameter(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/data"\nruntime_dir = "{tmp_path}/run"\n'
                   '[strategy]\nplugin = "profit_aware"\nmin_profit_bps = "high"\n')
    r = subprocess.run([*SUPERVISOR, "--config", str(cfg), "start", "--detach"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "strategy.min_profit_bps" in r.stderr, r
    r = subprocess.run([sys.executable, "-m", "actors.strategy", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "strategy.min_profit_bps" in r.stderr, r


# --- containment ----------------------------------------------------------------------------


class Fragile(Strategy):
    name = "fragile"

    def on_book(self, ctx: SymbolContext):
        if ctx.symbol == "BTCTRY":
            raise ZeroDivisionError("boom")
        return [Place("buy", ctx.ask, D("0.1"), "ok")]


class WrongType(Strategy):
    name = "wrong"

    def on_book(self, ctx: SymbolContext):
        return ["buy please"]


def test_a_raising_plugin_pauses_only_its_symbol():
    h = host_for(Fragile(Fragile.Params()))
    out = h.decide("BTCTRY")
    assert out.failure is not None and "ZeroDivisionError: boom" in out.failure.error
    assert out.failure.context.symbol == "BTCTRY" and out.intents == []
    assert "BTCTRY" in h.failed
    assert h.decide("BTCTRY").intents == [] and h.decide("BTCTRY").failure is None
    eth = h.decide("ETHTRY")
    assert len(eth.intents) == 1 and eth.intents[0].reason == "ok"


def test_a_plugin_returning_garbage_is_contained_too():
    h = host_for(WrongType(WrongType.Params()))
    out = h.decide("ETHTRY")
    assert out.failure is not None and "TypeError" in out.failure.error


def test_cancels_only_reach_our_open_orders():
    class Canceller(Strategy):
        name = "canceller"

        def on_book(self, ctx):
            return [Cancel("mine", "why"), Cancel("someone-elses", "why")]

    order = OpenOrder(client_order_id="mine", intent_id="i", symbol="BTCTRY", side="buy",
                      price=D(1), quantity=D(1), filled_quantity=D(0), state="OPEN")
    h = host_for(Canceller(Canceller.Params()), open_orders=[order])
    out = h.decide("BTCTRY")
    assert [c.client_order_id for c in out.cancels] == ["mine"]


# --- the inventory-skewed market maker ------------------------------------------------------


def test_mm_quotes_a_bid_first_then_an_ask_when_holding():
    mm = InventoryMarketMaker(InventoryMMParams(half_spread_bps=50, skew_bps=0))
    h = host_for(mm)
    (bid,) = h.decide("BTCTRY").intents
    # mid 1000.5, half spread 0.5 %: 995.4975, under the best bid: a maker quote
    assert bid.side == "buy" and bid.price == D("1000.5") * D("0.995")
    assert bid.quantity == D(150) / bid.price and bid.boot == 3
    pos = Position(symbol="BTCTRY", quantity=D("0.1"), avg_cost=D(990))
    h = host_for(mm, positions=[pos], open_orders=[OpenOrder(
        client_order_id="b", intent_id="i", symbol="BTCTRY", side="buy", price=bid.price,
        quantity=D(1), filled_quantity=D(0), state="OPEN")])
    (ask,) = h.decide("BTCTRY").intents
    assert ask.side == "sell" and ask.price == D("1000.5") * D("1.005")
    assert ask.quantity == min(D("0.1"), D(150) / ask.price)


def test_mm_leans_against_inventory():
    mm = InventoryMarketMaker(InventoryMMParams(skew_bps=100, max_inventory_try=D(1000)))
    flat = mm.targets(host_for(mm).context("BTCTRY"))
    long = mm.targets(host_for(mm, positions=[Position(
        symbol="BTCTRY", quantity=D("0.5"), avg_cost=D(1000))]).context("BTCTRY"))
    assert long[0] < flat[0] and long[1] < flat[1]  # holding: both quotes move down


def test_mm_requotes_a_stale_order_and_respects_the_inventory_cap():
    mm = InventoryMarketMaker(InventoryMMParams(requote_bps=10, max_inventory_try=D(100),
                                                skew_bps=0))
    stale = OpenOrder(client_order_id="old", intent_id="i", symbol="BTCTRY", side="buy",
                      price=D(900), quantity=D(1), filled_quantity=D(0), state="OPEN")
    h = host_for(mm, open_orders=[stale])
    out = h.decide("BTCTRY")
    assert [c.client_order_id for c in out.cancels] == ["old"]
    # inventory cap 100 TRY < one 150 TRY quote: no bid at all
    assert all(i.side != "buy" for i in out.intents)
    # and while an intent is pending, only cancels
    gating.begin_intent(h.gate, "BTCTRY", "x")
    assert h.decide("BTCTRY").intents == []


# --- public trades --------------------------------------------------------------------------


class TapeFollower(Strategy):
    """Bids at the price of every public sell it hears (a plug-in that needs the tape)."""

    name = "tape"

    def on_book(self, ctx: SymbolContext):
        return ()

    def on_trade(self, ctx: SymbolContext, price, quantity, side):
        if side == "sell":
            return [Place("buy", price, quantity, reason=f"follow {side} {price}")]
        return ()


def test_only_plugins_that_override_on_trade_hear_trades():
    assert host_for(TapeFollower(TapeFollower.Params())).hears_trades
    assert not host_for(ProfitAware(ProfitAware.Params())).hears_trades


def test_on_trade_decides_through_the_host_like_a_book():
    h = host_for(TapeFollower(TapeFollower.Params()))
    assert h.decide("BTCTRY", "on_trade", D("999.5"), D("0.2"), "buy").intents == []
    out = h.decide("BTCTRY", "on_trade", D("999.5"), D("0.2"), "sell")
    [intent] = out.intents
    assert (intent.side, intent.price, intent.quantity) == ("buy", D("999.5"), D("0.2"))
    assert intent.reason == "follow sell 999.5"
    assert h.gate.pending["BTCTRY"] == intent.intent_id  # one intent in flight, as for books
