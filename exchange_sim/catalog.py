"""BTCTurk's documented API, read from its own swagger files (copied into swagger/).

The simulator routes every documented path and method: the modelled ones to their
handlers, the rest to a loud ``501 NOT_MODELLED_BY_SIMULATOR`` answer (never a silent 404),
and a known path with the wrong method to ``405``. Because the table is built from the
swagger files themselves, a documented endpoint cannot be forgotten: the conformance test
(tests/test_exchange_sim_conformance.py) iterates the same files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SWAGGER_DIR = Path(__file__).resolve().parent / "swagger"
SWAGGER_FILES = ("btcturk.api.v1.swagger.json", "btcturk.api.v2.swagger.json")
METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    template: str  # as documented, e.g. /api/v1/users/transactions/trade/{id}
    tags: tuple[str, ...]
    source: str  # swagger file name
    spec: dict[str, Any]

    @property
    def pattern(self) -> re.Pattern[str]:
        return template_pattern(self.template)


def template_pattern(template: str) -> re.Pattern[str]:
    """Lower-cased (routes are case-insensitive) with ``{name}`` matching one segment."""
    parts = re.split(r"(\{[^}]+\})", template.lower())
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


@cache
def swagger(name: str) -> dict[str, Any]:
    return json.loads((SWAGGER_DIR / name).read_text())


@cache
def operations() -> tuple[Operation, ...]:
    ops: dict[tuple[str, str], Operation] = {}
    for name in SWAGGER_FILES:
        for template, item in swagger(name)["paths"].items():
            for method, spec in item.items():
                if method not in METHODS:
                    continue
                key = (method.upper(), template.lower())
                # /api/resources/* is in both files: one entry is enough.
                ops.setdefault(key, Operation(method.upper(), template,
                                              tuple(spec.get("tags", ())), name, spec))
    return tuple(ops.values())


class Catalog:
    """Documented (method, path) lookups, compiled once."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Operation]] = {}
        self._templated: list[tuple[re.Pattern[str], Operation]] = []
        for op in operations():
            if "{" in op.template:
                self._templated.append((op.pattern, op))
            else:
                self._exact.setdefault(op.template.lower(), {})[op.method] = op

    def methods_for(self, path: str) -> dict[str, Operation]:
        """Every documented operation on this (lower-cased) path, by method."""
        found = dict(self._exact.get(path, {}))
        for pattern, op in self._templated:
            if op.method not in found and pattern.match(path):
                found[op.method] = op
        return found
