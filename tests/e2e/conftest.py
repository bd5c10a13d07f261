from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from waymesh.tools.harness import Mesh, running_mesh


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with running_mesh(tmp_path) as m:
        yield m
