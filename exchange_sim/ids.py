"""Id allocation that never repeats an id, across restarts included."""

from __future__ import annotations

from collections.abc import Callable

Reserve = Callable[[str, int], None]

ID_BLOCK = 1000


class IdAllocator:
    """Monotonic ids handed out from reserved blocks.

    Before an id beyond the reserved ceiling is handed out, ``on_reserve(name, ceiling)``
    runs (the state store makes the new ceiling durable), so ids never repeat across a
    restart, even one after a SIGKILL between handing an id out and saving its order:
    a restart continues from the last durable ceiling, skipping at most one block.
    """

    def __init__(self, name: str, start: int, on_reserve: Reserve | None = None) -> None:
        self.name = name
        self.next = start
        self.ceiling = start
        self.on_reserve = on_reserve

    def __call__(self) -> int:
        value = self.next
        if value >= self.ceiling:
            self.ceiling = value + ID_BLOCK
            if self.on_reserve is not None:
                self.on_reserve(self.name, self.ceiling)
        self.next += 1
        return value
