"""What the executor's parts share: the DB, the venue, the clock, the keys in flight and
the publish/spawn services of the actor. Wiring (actor.py) builds one; each part (orders,
probes, sync, snapshot, gates) holds it instead of reaching into the actor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from actors.executor.db import ExecutorDB
from actors.executor.faults import Faults
from actors.executor.idempotency import Key
from actors.executor.venues.base import Venue
from bus.messages import Msg
from shared.clock import Clock
from shared.config import Config

SUBMIT, CANCEL = "submit", "cancel"
KeyId = tuple[str, str]  # (action, client order id)


@dataclass(eq=False)
class ExecState:
    cfg: Config
    venue: Venue
    clock: Clock
    faults: Faults
    counters: Counter[str]
    publish: Callable[[Msg], None]
    spawn: Callable[[Coroutine[Any, Any, Any], str], Any]
    db_or_none: ExecutorDB | None = None
    keys: dict[KeyId, Key] = field(default_factory=dict)  # non-terminal keys
    key_modes: dict[KeyId, str] = field(default_factory=dict)
    recovering: bool = True
    orphan_scan_done: bool = False
    unresolvable: set[KeyId] = field(default_factory=set)
    dirty: bool = True  # a portfolio snapshot is due
    _logged_once: set[str] = field(default_factory=set)

    def now(self) -> float:
        """Wall seconds (what is stored and compared across processes)."""
        return self.clock.wall_ns() / 1e9

    def mono(self) -> float:
        """Monotonic seconds (intervals within this process)."""
        return self.clock.mono_ns() / 1e9

    @property
    def mode(self) -> str:
        return self.cfg.mode

    @property
    def dry_run(self) -> bool:
        return self.cfg.mode == "dry-run"

    @property
    def db(self) -> ExecutorDB:
        assert self.db_or_none is not None, "executor DB not open"
        return self.db_or_none

    def log_once(self, what: str, text: str) -> None:
        if what not in self._logged_once:
            self._logged_once.add(what)
            logger.warning(text)
