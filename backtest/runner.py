"""One backtest from recordings and options (what the CLI and the sweep call), and
``--set`` overrides: ``key=value`` sets a parameter of the strategy plug-in,
``section.key=value`` a config field (``risk.cooldown_s=5``, ``strategy.throttle_ms=100``)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from actors.strategy.loader import load_strategy
from backtest.data import market_messages
from backtest.engine import Backtest, Fees, Result
from backtest.metrics import summary as summarise
from shared.config import Config, ConfigError
from shared.config_ranges import explain


@dataclass
class Options:
    recordings: list[str]
    plugin: str | None = None
    sets: dict[str, str] = field(default_factory=dict)
    symbols: list[str] = field(default_factory=list)
    maker_fee: Decimal = Fees.maker
    taker_fee: Decimal = Fees.taker
    balances: dict[str, Decimal] = field(default_factory=lambda: {"TRY": Decimal("100000")})
    period_s: float = 60.0


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def parse_balances(text: str) -> dict[str, Decimal]:
    out = {}
    for part in text.split(","):
        asset, sep, amount = part.partition("=")
        try:
            out[asset.strip().upper()] = Decimal(amount)
        except ArithmeticError:
            sep = ""
        if not sep:
            raise ConfigError(f"--balances {text!r}: expected ASSET=AMOUNT[,...]")
    return out


def configured(base: Config, opts: Options) -> tuple[Config, dict[str, Any]]:
    """A copy of ``base`` for the backtest (paper mode: the gates as for paper trading)
    with the dotted overrides applied; the plug-in overrides are returned apart."""
    cfg = copy.deepcopy(base)
    cfg.mode = "paper"
    if opts.plugin:
        cfg.strategy.plugin = opts.plugin
        cfg.strategy.params = {}  # another plug-in's parameters would be unknown keys
    plugin_sets: dict[str, Any] = {}
    for key, value in opts.sets.items():
        if "." not in key:
            plugin_sets[key] = value
            continue
        section_name, _, name = key.partition(".")
        section = getattr(cfg, section_name, None)
        fields = {f.name: f for f in msgspec.structs.fields(section)} if isinstance(
            section, msgspec.Struct) else {}
        if name not in fields:
            raise ConfigError(f"--set {key}: no such config field")
        try:
            setattr(section, name, msgspec.convert(value, fields[name].type, strict=False))
        except msgspec.ValidationError as exc:
            doc = {section_name: {name: value}}
            raise ConfigError(f"--set {explain(str(exc), key, doc, Config)}") from None
        try:  # the section again as a whole: its money checks (__post_init__) run then
            msgspec.convert(msgspec.to_builtins(section), type(section))
        except msgspec.ValidationError as exc:
            raise ConfigError(f"--set {section_name}.{exc}") from None
    return cfg, plugin_sets


def run(base: Config, opts: Options,
        progress: Callable[[int], None] | None = None) -> tuple[Result, dict[str, Any]]:
    """``progress``: seconds of recorded time read so far (data.market_span_s is the
    whole)."""
    cfg, plugin_sets = configured(base, opts)
    strategy = load_strategy(cfg.strategy, plugin_sets)
    for r in opts.recordings:
        if not os.path.exists(r):
            raise ConfigError(f"recording {r}: no such file or directory")
    bt = Backtest(cfg, strategy, fees=Fees(opts.maker_fee, opts.taker_fee),
                  balances=opts.balances)
    result = bt.run(market_messages(opts.recordings, opts.symbols, progress))
    if not result.books:
        raise ConfigError("no market data (md.book.*) in " + ", ".join(opts.recordings))
    out = summarise(result, opts.period_s)
    out["strategy"] = {"plugin": cfg.strategy.plugin, "name": strategy.name,
                       "params": msgspec.to_builtins(strategy.params)}
    out["fees"] = {"maker": str(opts.maker_fee), "taker": str(opts.taker_fee)}
    return result, out
