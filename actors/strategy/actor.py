"""The strategy actor."""

from __future__ import annotations

from actors.runtime import Actor, main_for


class StrategyActor(Actor):
    name = "strategy"


def main() -> None:
    main_for(StrategyActor)


if __name__ == "__main__":
    main()
