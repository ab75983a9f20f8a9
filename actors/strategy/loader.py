"""Find a strategy plug-in and build it from the ``[strategy]`` config table.

``strategy.plugin`` is either ``"package.module:ClassName"`` or the name of an installed
plug-in: an entry point in the group ``btcbot.strategies`` (``name = "pkg.mod:Class"`` in
the plug-in's pyproject ``[project.entry-points."btcbot.strategies"]``), or one of the
strategies shipped here (``BUILTIN``). Parameters are every key of the table the host does
not use (``strategy.params`` after config loading), validated by the plug-in's ``Params``
struct. Every failure is a ``ConfigError`` naming the field (exit 2).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

import msgspec

from actors.strategy.api import INTERFACE_VERSION, Strategy
from shared.config import ConfigError, StrategyConfig

ENTRY_POINT_GROUP = "btcbot.strategies"
BUILTIN = {
    "profit_aware": "actors.strategy.plugins.profit_aware:ProfitAware",
    "inventory_mm": "actors.strategy.plugins.inventory_mm:InventoryMarketMaker",
}


def resolve(spec: str) -> type[Strategy]:
    """The class a ``strategy.plugin`` value names."""
    target = spec
    if ":" not in spec:
        found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        target = found.get(spec) or BUILTIN.get(spec) or ""
        if not target:
            known = ", ".join(sorted(set(found) | set(BUILTIN)))
            raise ConfigError(f"strategy.plugin: unknown strategy {spec!r} (known: {known}; "
                              f"or give 'package.module:ClassName')")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"strategy.plugin: cannot import {module_name!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"strategy.plugin: {target!r} is not a Strategy subclass "
                          f"(actors.strategy.api.Strategy)")
    if cls.interface_version != INTERFACE_VERSION:
        raise ConfigError(f"strategy.plugin: {target!r} implements interface "
                          f"v{cls.interface_version}, this host v{INTERFACE_VERSION}")
    if not cls.name:
        raise ConfigError(f"strategy.plugin: {target!r} has no name")
    return cls


def build_params(cls: type[Strategy], params: dict[str, Any]) -> Any:
    try:
        # Lax: "30" from --set or TOML becomes the int 30; a bad value still fails.
        return msgspec.convert(params, type=cls.Params, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, cls)) from None
    except (ValueError, TypeError) as exc:  # raised by Params.__post_init__
        raise ConfigError(f"strategy: {cls.name}: {exc}") from None


def load_strategy(cfg: StrategyConfig, overrides: dict[str, Any] | None = None) -> Strategy:
    """The configured plug-in with its validated parameters (``overrides``: the
    backtest's ``--set key=value``, applied over the config table)."""
    cls = resolve(cfg.plugin)
    params = {**cfg.params, **(overrides or {})}
    return cls(build_params(cls, params))


def _describe(exc: msgspec.ValidationError, cls: type[Strategy]) -> str:
    """msgspec says '... - at `$.entry_notional_try`' or 'Object contains unknown
    field `x`'; lead with the dotted field name."""
    text = str(exc)
    if "unknown field `" in text:
        name = text.split("unknown field `", 1)[1].split("`", 1)[0]
        return f"strategy.{name}: unknown parameter of strategy {cls.name!r}"
    if " - at `$." in text:
        what, _, where = text.rpartition(" - at `$.")
        return f"strategy.{where.rstrip('`')}: {what}"
    return f"strategy: {cls.name}: {text}"
