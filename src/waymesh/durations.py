"""Go duration syntax (`time.ParseDuration`): "1.5s", "100ms", "1h2m", "0".

Istio's API fields and the Gateway API conformance echo server (`?delay=`) both use it.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign, as Go accepts
    "μs": 1e-6,  # U+03BC greek mu, as Go accepts
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str, *, allow_sign: bool = False) -> float:
    """Seconds for a Go duration. A leading sign is accepted only with `allow_sign`."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string like '1.5s', got {text!r}")
    s = text.strip()
    sign = 1.0
    if allow_sign and s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("empty duration")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number with a unit (ns, us, ms, s, m, h), e.g. '1.5s' or '1m30s'"
            )
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total
