"""The risk actor."""

from __future__ import annotations

from actors.runtime import Actor, main_for


class RiskActor(Actor):
    name = "risk"


def main() -> None:
    main_for(RiskActor)


if __name__ == "__main__":
    main()
