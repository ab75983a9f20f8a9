"""The executor actor."""

from __future__ import annotations

from actors.runtime import Actor, main_for


class ExecutorActor(Actor):
    name = "executor"


def main() -> None:
    main_for(ExecutorActor)


if __name__ == "__main__":
    main()
