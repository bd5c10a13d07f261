"""Timestamps are stored as 'YYYY-MM-DDTHH:MM:SSZ' in UTC so that SQL can compare them as text."""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import ApprovalsError

_STORED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def to_utc_text(value: str) -> str:
    """Normalise an ISO 8601 timestamp (GitHub's '...Z' or git's '+02:00' offsets) to stored form."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        # A timestamp without offset is taken as UTC, which is what GitHub and policy bots write.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(_STORED_FORMAT)


def parse_since(value: str | None) -> str | None:
    """Turn a --since value (a date or a full timestamp) into the stored form, or explain why not."""
    if value is None or value.strip() == "":
        return None
    try:
        return to_utc_text(value)
    except ValueError:
        raise ApprovalsError(
            f"--since {value!r} is not a date: use YYYY-MM-DD or an ISO 8601 timestamp"
        ) from None
