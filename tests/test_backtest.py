"""Backtest: the fill model (pure), the engine over a synthetic recording (net PnL is the
equity change; the live rounding rules hold; deterministic), and the CLI (text, JSON,
HTML/PNG report, sweep, exit 2 on bad input)."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from actors.strategy.api import Strategy
from actors.strategy.loader import load_strategy
from backtest.data import market_messages, write_synthetic
from backtest.engine import Backtest, Fees
from backtest.fills import Matcher, SimOrder
from backtest.metrics import drawdown, summary
from bus.messages import BookSnapshot, PublicTrade
from shared import pnl
from shared.config import Config
from tests.helpers import REPO, SUPERVISOR

D = Decimal
SYMBOLS = ["BTCTRY", "ETHTRY", "SOLTRY"]


def book(bids, asks) -> BookSnapshot:
    return BookSnapshot(symbol="X", bids=[(D(p), D(q)) for p, q in bids],
                        asks=[(D(p), D(q)) for p, q in asks], source="ws", exchange_ts_ms=0,
                        recv_wall_ns=0, recv_mono_ns=0, age_ms=0)


def order(side: str, price: str, qty: str, cid: str = "c", ttl_ns: int = 100) -> SimOrder:
    return SimOrder(cid, "i", "X", side, D(price), D(qty), 0, ttl_ns)


# --- the fill model ---------------------------------------------------------------------------


def test_marketable_part_takes_levels_at_their_price_and_pays_taker():
    m = Matcher(maker_fee=D("0.0005"), taker_fee=D("0.001"))
    o = order("buy", "101", "3")
    fills = m.submit(o, book([("99", "5")], [("100", "1"), ("101", "1"), ("102", "9")]), 1)
    assert [(f.price, f.quantity, f.maker) for f in fills] == [(D(100), D(1), False),
                                                               (D(101), D(1), False)]
    assert fills[0].fee == D("0.1") and o.left == 1 and "c" in m.open  # the rest rests


def test_resting_order_fills_at_its_own_price_when_touched_or_crossed_as_maker():
    m = Matcher(maker_fee=D("0.0005"), taker_fee=D("0.001"))
    m.submit(order("buy", "100", "2"), book([("99", "5")], [("101", "5")]), 1)
    assert m.on_book(book([("98", "1")], [("100.5", "5")]), 2) == []  # not reached
    fills = m.on_book(book([("98", "1")], [("100", "0.5"), ("100.5", "9")]), 3)
    # touching counts; at OUR price; up to the volume shown at or under it
    assert [(f.price, f.quantity, f.maker) for f in fills] == [(D(100), D("0.5"), True)]
    assert fills[0].fee == (D("50") * D("0.0005")).quantize(D("1e-8"))
    fills = m.on_book(book([("98", "1")], [("99", "9")]), 4)
    assert sum(f.quantity for f in fills) == D("1.5") and not m.open


def test_two_orders_share_one_books_volume():
    m = Matcher(maker_fee=D(0), taker_fee=D(0))
    m.submit(order("sell", "105", "1", cid="a"), None, 0)
    m.submit(order("sell", "104", "1", cid="b"), None, 0)
    fills = m.on_book(book([("106", "1.5")], [("107", "1")]), 1)
    # the better-priced (lower) sell first, then what is left
    assert [(f.cid, f.quantity) for f in fills] == [("b", D(1)), ("a", D("0.5"))]


def test_fees_round_up_and_orders_expire():
    m = Matcher(maker_fee=D("0.0005"), taker_fee=D("0.001"))
    assert m.fee(D("1.23456789"), D("0.00000001"), maker=False) == D("1E-8")
    m.submit(order("buy", "1", "1", ttl_ns=10), None, 0)
    assert m.expire(9) == [] and [o.cid for o in m.expire(10)] == ["c"]


def test_drawdown():
    assert drawdown([D(10), D(12), D(9), D(11), D(7), D(13)]) == (D(5), D(5) / D(12))
    assert drawdown([]) == (D(0), D(0))


# --- the engine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("market")
    write_synthetic(out, symbols=SYMBOLS, seconds=300, seed=11)
    return out


def run(market: Path, plugin: str, **risk) -> tuple[Backtest, dict]:
    cfg = Config()
    cfg.mode = "paper"
    cfg.strategy.plugin = plugin
    for k, v in risk.items():
        setattr(cfg.risk, k, v)
    bt = Backtest(cfg, load_strategy(cfg.strategy), fees=Fees())
    result = bt.run(market_messages([market]))
    return bt, summary(result)


@pytest.mark.parametrize(("plugin", "risk"), [
    ("profit_aware", {}),
    ("inventory_mm", {"max_open_orders_per_symbol": 2, "cooldown_s": 1.0}),
])
def test_net_pnl_is_the_equity_change_and_live_rules_hold(market, plugin, risk):
    bt, s = run(market, plugin, **risk)
    assert s["fills"] > 0 and s["orders"] > 0, s
    net = D(s["pnl_total"]["net"])
    assert abs(net - D(s["equity_change"])) <= D("1e-9"), s
    assert D(s["fees_paid"]) == D(s["pnl_total"]["fees"])
    rules = bt.host.rules
    for o in bt.result.orders:  # risk's rounding and minimums, as live
        r = rules[o.symbol]
        assert o.price == o.price.quantize(D(1).scaleb(-r.price_scale))
        assert o.quantity == o.quantity.quantize(D(1).scaleb(-r.qty_scale))
        assert o.price * o.quantity >= r.min_total
    # the account never spends what it does not have
    assert all(v >= 0 for v in bt.free.values()), bt.free
    positions = {f.symbol: pnl.PositionState() for f in bt.result.fills}
    for f in bt.result.fills:
        positions[f.symbol] = pnl.apply_fill(positions[f.symbol], f.side, f.price, f.quantity,
                                             f.fee)
    assert {s: p.quantity for s, p in positions.items()} == {
        s: p.quantity for s, p in bt.positions.items()}


def test_the_backtest_is_deterministic(market):
    assert run(market, "profit_aware")[1] == run(market, "profit_aware")[1]


def test_a_raising_plugin_is_contained_in_the_backtest(market):
    cfg = Config()
    cfg.mode = "paper"
    cfg.strategy.plugin = "tests.test_strategy_plugins:Fragile"
    bt = Backtest(cfg, load_strategy(cfg.strategy))
    result = bt.run(market_messages([market]))
    assert result.plugin_errors == ["BTCTRY on_book: ZeroDivisionError: boom"]
    assert {o.symbol for o in result.orders} <= {"ETHTRY", "SOLTRY"} and result.orders


# --- the command line -------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPERVISOR, "--config", str(REPO / "supervisor.toml"),
                           "backtest", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_cli_text_json_and_report(market, tmp_path):
    r = cli(str(market))
    assert r.returncode == 0, r.stderr
    assert "net PnL" in r.stdout and "max drawdown" in r.stdout and "Sharpe" in r.stdout
    r = cli(str(market), "--json", "--report", str(tmp_path / "r.html"),
            "--set", "entry_notional_try=150")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["strategy"]["params"]["entry_notional_try"] == "150"
    for key in ("max_drawdown", "sharpe", "sortino", "turnover", "fill_ratio", "fees_paid",
                "orders", "fills", "final_inventory"):
        assert key in doc
    series = doc["inventory"]
    assert len(series) >= 5 and series[-1]["inventory"] == doc["final_inventory"]
    assert [x["ts_ns"] for x in series] == sorted(x["ts_ns"] for x in series)
    page = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and doc["pnl_total"]["net"] in page
    r = cli(str(market), "--report", str(tmp_path / "r.png"))
    assert r.returncode == 0 and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_sweep_ranks_by_net_pnl(market):
    r = cli(str(market), "--strategy", "inventory_mm", "--set",
            "risk.max_open_orders_per_symbol=2", "--set", "risk.cooldown_s=1",
            "--sweep", "half_spread_bps=10,30", "--sweep", "skew_bps=0,40", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 4
    nets = [D(x["summary"]["pnl_total"]["net"]) for x in rows]
    assert nets == sorted(nets, reverse=True)
    assert {tuple(sorted(x["point"].items())) for x in rows} == {
        (("half_spread_bps", h), ("skew_bps", k)) for h in ("10", "30") for k in ("0", "40")}


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "no_such_param=1"], "strategy.no_such_param"),
    (["--set", "risk.no_such=1"], "risk.no_such"),
    (["--set", "risk.cooldown_s=soon"], "risk.cooldown_s"),
    (["--set", "risk.cooldown_s=-1"], "--set risk.cooldown_s: must be 0..31622400 (got '-1')"),
    (["--set", "risk.max_daily_loss_try=0"], "--set risk.max_daily_loss_try: must be > 0 (got 0)"),
    (["--strategy", "nosuch"], "strategy.plugin"),
    (["--maker-fee-bps", "x"], "--maker-fee-bps"),
])
def test_cli_bad_input_exits_2_naming_it(market, args, message):
    r = cli(str(market), *args)
    assert r.returncode == 2 and message in r.stderr, (r.stdout, r.stderr)


def test_cli_a_missing_recording_exits_2(tmp_path):
    r = cli(str(tmp_path / "nope"))
    assert r.returncode == 2 and "nope" in r.stderr


def test_cli_consistency_refuses_what_it_cannot_check(market, tmp_path):
    """--consistency needs a full paper session recording (a market-only one has no
    strategy whose start it could follow) and takes no other recordings: exit 2, why."""
    r = cli("--consistency", str(market))
    assert r.returncode == 2 and "joined_hb_seq" in r.stderr, (r.stdout, r.stderr)
    r = cli("--consistency", str(market), str(market))
    assert r.returncode == 2 and "takes no RECORDINGS" in r.stderr, r.stderr
    r = cli("--consistency", str(tmp_path / "nope"))
    assert r.returncode == 2 and "nope" in r.stderr, r.stderr
    r = cli()
    assert r.returncode == 2 and "RECORDING" in r.stderr, r.stderr


def test_record_market_records_market_data_only_and_a_backtest_reads_it(tmp_path):
    from collections import Counter

    from shared.recording import read_recording
    from tests.helpers import base_config, write_config

    cfg = write_config(tmp_path, base_config(tmp_path))
    out = tmp_path / "market"
    r = subprocess.run([*SUPERVISOR, "--config", str(cfg), "record-market", "--symbols",
                        "BTCTRY,ETHTRY", "--duration", "12", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    topics = Counter(rec.topic for rec in read_recording(out))
    assert topics["md.book.BTCTRY"] > 0 and topics["md.book.ETHTRY"] > 0
    assert topics["md.rules.BTCTRY"] > 0
    assert "md.book.SOLTRY" not in topics  # only the symbols asked for
    traded = [t for t in topics if t.split(".")[0] in (
        "intent", "decision", "order", "fill", "portfolio")]
    assert traded == []  # no strategy, risk or executor ran
    # and nothing was left running (its own runtime dir, beside the bot's)
    assert not (tmp_path / "run" / "record-market" / "supervisor.pid").exists()
    r = cli(str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["books"] == topics["md.book.BTCTRY"] + topics["md.book.ETHTRY"]


def test_the_fast_book_decoding_gives_the_bus_decoders_messages(market):
    from bus.messages import packet_decoder
    from shared.recording import read_recording

    fast = [b for _, b in market_messages([market]) if isinstance(b, BookSnapshot)]
    slow = [packet_decoder.decode(r.payload).body
            for r in read_recording(market, ("md.book.",))]
    assert len(fast) == len(slow) > 0 and fast == slow


def test_the_fee_schedule_comes_from_the_config_and_flags_override_it(market, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[backtest]\nmaker_fee_bps = "2"\ntaker_fee_bps = "20"\n')

    def fees(*extra: str) -> dict:
        r = subprocess.run([*SUPERVISOR, "--config", str(cfg), "backtest", str(market),
                            "--json", *extra], capture_output=True, text=True, cwd=REPO,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        paid = sum(D(row["fees"]) for row in doc["pnl"].values())
        assert paid == D(doc["fees_paid"]) and paid > 0
        return doc["fees"]

    assert fees() == {"maker": "0.0002", "taker": "0.002"}
    assert fees("--taker-fee-bps", "7") == {"maker": "0.0002", "taker": "0.0007"}
    cfg.write_text('[backtest]\ntaker_fee_bps = "-1"\n')
    r = subprocess.run([*SUPERVISOR, "--config", str(cfg), "backtest", str(market)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "backtest.taker_fee_bps" in r.stderr


class _TapeCounter(Strategy):
    name = "tape-counter"

    def __init__(self) -> None:
        super().__init__(self.Params())
        self.heard: list[tuple[str, str, str]] = []

    def on_book(self, ctx):
        return ()

    def on_trade(self, ctx, price, quantity, side):
        self.heard.append((ctx.symbol, str(price), side))
        return ()


def test_recorded_public_trades_reach_on_trade(tmp_path):
    """A recording's md.trade.* is read back and heard by a plug-in that listens, once
    per trade, in recorded order; the books are the same as without trades."""
    with_trades = write_synthetic(tmp_path / "t", symbols=SYMBOLS, seconds=30, seed=3,
                                  trade_every=4)
    plain = write_synthetic(tmp_path / "p", symbols=SYMBOLS, seconds=30, seed=3)
    msgs = list(market_messages([with_trades.parent]))
    trades = [b for _c, b in msgs if isinstance(b, PublicTrade)]
    assert len(trades) == len(SYMBOLS) * (30 * 4 // 4)
    books = [b for _c, b in msgs if isinstance(b, BookSnapshot)]
    assert books == [b for _c, b in market_messages([plain.parent])
                     if isinstance(b, BookSnapshot)]
    strategy = _TapeCounter()
    cfg = Config()
    cfg.mode = "paper"
    Backtest(cfg, strategy, fees=Fees()).run(iter(msgs))
    assert strategy.heard == [(t.symbol, str(t.price), t.side) for t in trades]


def test_backtest_fee_defaults_are_the_simulators() -> None:
    """A backtest of a paper session charges what that session's simulator charged."""
    from exchange_sim.fees import DEFAULT_MAKER, DEFAULT_TAKER

    assert (Fees().maker, Fees().taker) == (DEFAULT_MAKER, DEFAULT_TAKER)


class _BookCounter(Strategy):
    name = "book-counter"

    def __init__(self) -> None:
        super().__init__(self.Params())
        self.books: list[int] = []  # the clock of each book decided on

    def on_book(self, ctx):
        self.books.append(ctx.now_ns)
        return ()


def test_a_later_trigger_does_not_move_the_throttle_past_the_book(tmp_path):
    """The throttle runs on the symbol's latest book's clock, as the live actor's: a
    portfolio snapshot that comes more than an interval after the last book (a loaded
    machine) waits for the next book or clock tick, it does not decide on the old book
    again (found by the consistency check under CI load)."""
    msgs = list(market_messages([write_synthetic(tmp_path / "m", symbols=["BTCTRY"],
                                                 seconds=2, seed=5).parent]))
    strategy = _BookCounter()
    cfg = Config()
    cfg.mode = "paper"
    cfg.strategy.throttle_ms = 100
    bt = Backtest(cfg, strategy, fees=Fees())
    first = next(i for i, (_c, b) in enumerate(msgs) if isinstance(b, BookSnapshot))
    for clock, body in msgs[:first + 1]:
        bt.step(clock, body)
    book_clock = bt.host.clock_of["BTCTRY"]
    assert strategy.books == [book_clock]
    bt._trigger("BTCTRY", book_clock + 150_000_000)  # a snapshot, 150 ms after the book
    assert strategy.books == [book_clock]
    assert bt._trailing["BTCTRY"] == book_clock + 100_000_000
