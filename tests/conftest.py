"""Shared fixtures: the simulator (tests/sim_fixtures.py) and real supervised
pipelines (tests/helpers.py), cleaned up even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.executor_harness import Rig, deterministic_book
from tests.helpers import Pipeline, base_config, kill_all, write_config
from tests.sim_fixtures import SimProcess, sim, sim_process  # noqa: F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run long soak tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow soak: run with --runslow (CI runs the short form)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Iterator[Any]:
    """make_pipeline(overrides=dict, env=dict) -> Pipeline (not yet started)."""
    made: list[tuple[Pipeline, dict[str, Any]]] = []

    def make(overrides: dict[str, Any] | None = None,
             env: dict[str, str] | None = None) -> Pipeline:
        doc = base_config(tmp_path, **(overrides or {}))
        pipeline = Pipeline(write_config(tmp_path, doc), env=env)
        made.append((pipeline, doc))
        return pipeline

    yield make
    for pipeline, doc in made:
        pipeline.stop()
        kill_all(pipeline.config, doc["simulator"]["port"])


@pytest.fixture
def rig(tmp_path: Path, sim: SimProcess) -> Iterator[Rig]:  # noqa: F811
    """A bus and (started by the test) executor/reconciler against the shared simulator,
    with a deterministic book."""
    deterministic_book(sim)
    r = Rig(tmp_path, sim)
    r.start_bus()
    yield r
    r.close()
