"""The marketdata actor."""

from __future__ import annotations

from actors.runtime import Actor, main_for


class MarketdataActor(Actor):
    name = "marketdata"


def main() -> None:
    main_for(MarketdataActor)


if __name__ == "__main__":
    main()
