from __future__ import annotations

import pytest

from waymesh.generate.validate import validate_with_envoy

from .golden import TESTDATA, check_case, translate_configs

CASES = sorted(p.name.removesuffix(".in.yaml") for p in TESTDATA.glob("*.in.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_case(case)


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts(case: str) -> None:
    """What each fixture's Gateways translate to is also what real Envoy accepts."""
    for name, config in translate_configs(case).items():
        if config.listeners:
            ok, output = validate_with_envoy(config)
            assert ok, f"{case} {name}: {output[-2000:]}"
