"""The allowed ranges of supervisor.toml's numbers, and how a violation is told.

Numbers are constrained where msgspec decodes them (``Meta`` on ``int``/``float``), so
a bad value never reaches a process. msgspec has no ``Meta`` bounds for ``Decimal``
(and decodes ``"NaN"`` into one), so the config's money fields are checked by
``check_decimals`` in their section's ``__post_init__``, which msgspec reports the same
way. ``explain`` turns msgspec's ``Expected `int` <= 65535 - at `$.dashboard.port```
into ``dashboard.port: must be 1..65535 (got 70000)``: the field, the whole allowed
range (read back from the type, not only the side that failed) and the value given.
Strings that carry numbers (starting balances, the simulator's fee schedule) are
checked here too, by the rules of the code that reads them later.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

import msgspec

# Upper bounds exist mostly to refuse TOML's ``inf`` (and any value that can only be a
# typo); they are far beyond anything sensible.
YEAR_S = 366 * 24 * 3600.0
HOUR_MS = 3_600_000

Seconds = Annotated[float, msgspec.Meta(gt=0, le=YEAR_S)]  # a duration that must pass
SecondsOrOff = Annotated[float, msgspec.Meta(ge=0, le=YEAR_S)]  # 0 = never / off
Millis = Annotated[int, msgspec.Meta(ge=1, le=HOUR_MS)]
MillisOrOff = Annotated[int, msgspec.Meta(ge=0, le=HOUR_MS)]
Count = Annotated[int, msgspec.Meta(ge=1)]  # at least one
CountOrOff = Annotated[int, msgspec.Meta(ge=0)]  # 0 = off / none
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Nice = Annotated[int, msgspec.Meta(ge=0, le=19)]  # negative needs privileges we never ask for
Hour = Annotated[int, msgspec.Meta(ge=0, le=23)]
ZstdLevel = Annotated[int, msgspec.Meta(ge=1, le=22)]
Bytes = Annotated[int, msgspec.Meta(ge=4096)]  # a recording segment holds many records
Symbol = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{1,20}$")]  # BTCTurk's pair names

# Decimal rules: (comparison, bound). Basis points are at most 100 %.
POSITIVE = (">", Decimal(0))
NON_NEGATIVE = (">=", Decimal(0))
MAX_BPS = Decimal(10_000)

_OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


def check_decimals(section: msgspec.Struct,
                   rules: dict[str, tuple[tuple[str, Decimal], ...]]) -> None:
    """Raise ValueError naming the first field of ``section`` outside its rules (every
    Decimal must also be finite). Called from ``__post_init__``: msgspec adds the
    section's path, ``explain`` joins the two."""
    for name, checks in rules.items():
        value: Decimal = getattr(section, name)
        if not value.is_finite():
            raise ValueError(f"{name}: must be a finite number (got {value})")
        for op, bound in checks:
            if not _OPS[op](value, bound):
                wanted = " and ".join(f"{o} {b}" for o, b in checks)
                raise ValueError(f"{name}: must be {wanted} (got {value})")


def bps(*, positive: bool = False) -> tuple[tuple[str, Decimal], ...]:
    return ((">", Decimal(0)) if positive else (">=", Decimal(0)), ("<=", MAX_BPS))


# --- telling a violation -------------------------------------------------------------

_CONSTRAINT = re.compile(r"^Expected `(int|float)` (>=|<=|>|<) \S+$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MISSING = object()


def explain(message: str, where: str, doc: dict[str, Any], root: type) -> str:
    """``where`` is a dotted path (``dashboard.port``, ``alerts.webhooks[0].timeout_s``)
    into ``doc`` (the raw TOML) and ``root`` (the Config type); ``message`` what
    msgspec said there. Returns the one-line explanation, field first."""
    if _CONSTRAINT.match(message):
        info = _type_at(msgspec.inspect.type_info(root), where)
        value = _value_at(doc, where)
        if info is not None:
            got = "" if value is _MISSING else f" (got {value!r})"
            return f"{where}: must be {describe_range(info)}{got}"
    if message.startswith("Expected `str` matching regex"):  # only Symbol has a pattern
        value = _value_at(doc, where)
        return f"{where}: must be a pair name in capitals, like BTCTRY (got {value!r})"
    if re.match(r"^[a-z_][a-z0-9_]*: ", message):  # from check_decimals: name the section
        return f"{where}.{message}"
    return f"{where}: {message}"


def describe_range(info: Any) -> str:
    low = (">=", info.ge) if info.ge is not None else (">", info.gt) if info.gt is not None \
        else None
    high = ("<=", info.le) if info.le is not None else ("<", info.lt) if info.lt is not None \
        else None
    if low and high and low[0] == ">=" and high[0] == "<=":
        return f"{_num(low[1])}..{_num(high[1])}"
    parts = [f"{bound[0]} {_num(bound[1])}" for bound in (low, high) if bound]
    return " and ".join(parts) or "a number"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _parts(where: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _PATH_PART.findall("." + where)]


def _type_at(info: Any, where: str) -> Any:
    for part in _parts(where):
        info = _unwrap(info)
        if isinstance(part, int) and isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        elif isinstance(info, msgspec.inspect.StructType):
            fields = {f.name: f.type for f in info.fields}
            if part not in fields:
                return None
            info = fields[part]
        else:
            return None
    info = _unwrap(info)
    return info if isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType) else None


def _unwrap(info: Any) -> Any:
    """``int | None`` (an optional setting) is constrained like its ``int``."""
    if isinstance(info, msgspec.inspect.UnionType):
        real = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(real) == 1:
            return real[0]
    return info


def _value_at(doc: Any, where: str) -> Any:
    for part in _parts(where):
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return doc


# --- strings that carry numbers ------------------------------------------------------

def _amount(text: str) -> Decimal | None:
    try:
        d = Decimal(text.strip())
    except ArithmeticError:
        return None
    return d if d.is_finite() else None


def balances_problem(text: str) -> str | None:
    """Why ``"TRY=100000,BTC=0.5"`` (a paper account's or a backtest's starting
    balances) is not valid, or None. The simulator and the backtest parse it later; a
    bad one would only show in the simulator's output, after retries."""
    for part in text.split(","):
        if not part.strip():
            continue  # "" is an empty account, as the simulator reads it
        asset, sep, amount = part.partition("=")
        value = _amount(amount) if sep else None
        if not asset.strip().isalnum() or value is None:
            return f"{part.strip()!r} is not ASSET=AMOUNT (e.g. TRY=100000,BTC=0.5)"
        if value < 0:
            return f"{part.strip()!r}: the amount must be >= 0"
    return None


def fee_schedule_problem(text: str) -> str | None:
    """Why ``"0:0.0005/0.001,1000000:0.0004/0.0009"`` (VOLUME:MAKER/TAKER tiers, rates
    as fractions) is not valid, or None; the simulator's own rules (exchange_sim/fees.py)."""
    volumes = []
    for part in text.split(","):
        volume, _, rates = part.strip().partition(":")
        maker, _, taker = rates.partition("/")
        values = [_amount(volume), _amount(maker), _amount(taker)]
        if any(v is None for v in values):
            return f"bad tier {part.strip()!r}: want VOLUME:MAKER/TAKER"
        v, m, t = values
        assert v is not None and m is not None and t is not None
        if not (0 <= m <= 1 and 0 <= t <= 1):
            return f"tier {part.strip()!r}: fee rates must be fractions, 0..1"
        volumes.append(v)
    if min(volumes) != 0:
        return "the first tier must start at volume 0"
    return None
