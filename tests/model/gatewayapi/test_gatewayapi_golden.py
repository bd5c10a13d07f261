from __future__ import annotations

import pytest

from .golden import TESTDATA, check_case

CASES = sorted(p.name.removesuffix(".in.yaml") for p in TESTDATA.glob("*.in.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_case(case)
