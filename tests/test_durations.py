"""Go duration syntax, shared by the API models and the echo server."""

import pytest

from waymesh.durations import parse_go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("1s", 1.0),
        ("300ms", 0.3),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("2us", 2e-6),
        ("5µs", 5e-6),
        ("-2s", -2.0),
        (".5s", 0.5),
        ("10ns", 1e-8),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text, allow_sign=True) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1s2", "--1s"])
def test_rejects_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text, allow_sign=True)


def test_a_sign_is_rejected_unless_allowed() -> None:
    with pytest.raises(ValueError):
        parse_go_duration("-2s")
