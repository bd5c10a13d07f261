from __future__ import annotations

import pytest
from pydantic import ValidationError

from waymesh.model.api.base import ApiModel, Duration, GatewayDuration, Re2Regex, check_re2, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5s", 1.5), ("100ms", 0.1), ("1h2m", 3720), ("0", 0), ("2us", 2e-6), ("1m30s", 90), (".5s", 0.5), ("10ns", 1e-8)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "abc", "-1s", "1x", "s", "1 s", "1d"])
def test_bad_duration(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("pattern", [r"^/api/v\d+/.*$", r"(?i)foo", r"\pL+", r"[[:alpha:]]+", r"a\z", r"(?P<x>a)"])
def test_re2_accepts(pattern):
    assert check_re2(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "why"),
    [("a(?=b)", "lookahead"), ("(?<!a)b", "lookbehind"), (r"(a)\1", "backreference"), ("a++", "possessive"),
     ("(?>a)", "atomic"), ("(", "missing")],
)
def test_re2_rejects(pattern, why):
    with pytest.raises(ValueError, match=why):
        check_re2(pattern)


class M(ApiModel):
    timeout: Duration | None = None
    gw: GatewayDuration | None = None
    regex: Re2Regex | None = None


def test_types_in_models():
    assert M(timeout="1s", gw="1h30m", regex="a.*").timeout == "1s"
    for bad in ({"timeout": "5x"}, {"gw": "1.5s"}, {"regex": "(?=x)"}, {"timeout": 5}, {"zz": 1}):
        with pytest.raises(ValidationError):
            M.model_validate(bad)
