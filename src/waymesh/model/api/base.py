"""Shared building blocks for the typed API models (Istio, Gateway API, core Kubernetes).

Every model subclasses `ApiModel`; see README.md in this folder for the conventions.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from waymesh.durations import parse_go_duration


class ApiModel(BaseModel):
    """Base for every API model: field names as in YAML, unknown fields rejected.

    `strict=True` because the CRD schemas are strict: `port: "80"` is a string, not an integer,
    and the API server would reject it; accepting it here would hide the mistake until the user
    moves to Kubernetes.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    def to_dict(self) -> dict[str, Any]:
        """The object as the user would write it (API names, no unset optional fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- durations -------------------------------------------------------------------------------

def parse_duration(s: str) -> float:
    """Parse a Go/Istio duration ("1.5s", "100ms", "1h2m") into seconds.

    Negative durations are rejected: no mesh setting has a use for them.
    """
    return parse_go_duration(s)


def _check_duration(s: str) -> str:
    parse_duration(s)
    return s


# Istio durations (Go syntax). The value stays a string so it round-trips as written.
Duration = Annotated[str, AfterValidator(_check_duration)]

# Gateway API durations (GEP-2257): a stricter subset, e.g. "1h30m", "500ms"; no fractions.
_GATEWAY_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")


def _check_gateway_duration(s: str) -> str:
    if not _GATEWAY_DURATION.match(s):
        raise ValueError(
            f"invalid duration {s!r}: Gateway API durations are 1-4 parts of up to 5 digits with "
            "h, m, s or ms, e.g. '10s' or '1h30m'"
        )
    return s


GatewayDuration = Annotated[str, AfterValidator(_check_gateway_duration)]


# --- regular expressions ---------------------------------------------------------------------

# Constructs Python's `re` accepts but Envoy's RE2 does not.
_NON_RE2 = [
    (re.compile(r"\(\?[=!]"), "lookahead"),
    (re.compile(r"\(\?<[=!]"), "lookbehind"),
    (re.compile(r"\(\?>"), "atomic group"),
    (re.compile(r"\(\?P="), "backreference"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]"), "backreference"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\k<"), "backreference"),
    (re.compile(r"(?<!\\)[*+?}]\+"), "possessive quantifier"),
]
# RE2 syntax Python lacks; rewritten to an equivalent before the compile check.
_RE2_ONLY = [
    (re.compile(r"\\[pP](\{\w+\}|\w)"), "a"),  # unicode classes
    (re.compile(r"\\z"), r"\\Z"),  # end of text
    (re.compile(r"\[\[:\^?\w+:\]\]"), "a"),  # POSIX classes
]


def check_re2(pattern: str) -> str:
    """Reject a regex that Envoy's RE2 engine would not compile."""
    for construct, what in _NON_RE2:
        if construct.search(pattern):
            raise ValueError(f"invalid regex {pattern!r}: RE2 does not support {what}s")
    probe = pattern
    for rx, repl in _RE2_ONLY:
        probe = rx.sub(repl, probe)
    try:
        re.compile(probe)
    except re.error as e:
        raise ValueError(f"invalid regex {pattern!r}: {e}") from None
    return pattern


Re2Regex = Annotated[str, AfterValidator(check_re2)]


# --- small shared types ----------------------------------------------------------------------

Port = Annotated[int, Field(ge=1, le=65535)]
# Kubernetes IntOrString (targetPort: 8080 or targetPort: http).
IntOrString = int | str
StringMap = dict[str, str]
