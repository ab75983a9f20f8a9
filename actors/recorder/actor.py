"""The recorder actor."""

from __future__ import annotations

from actors.runtime import Actor, main_for


class RecorderActor(Actor):
    name = "recorder"


def main() -> None:
    main_for(RecorderActor)


if __name__ == "__main__":
    main()
