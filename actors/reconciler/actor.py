"""The reconciler actor."""

from __future__ import annotations

from actors.runtime import Actor, main_for


class ReconcilerActor(Actor):
    name = "reconciler"


def main() -> None:
    main_for(ReconcilerActor)


if __name__ == "__main__":
    main()
