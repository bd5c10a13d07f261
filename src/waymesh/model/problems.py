"""Report a translation problem against the object and field that caused it."""

from __future__ import annotations

from waymesh.config.types import ConfigObject
from waymesh.model.context import TranslateContext


def report(ctx: TranslateContext, obj: ConfigObject, field_path: str | None, reason: str,
           severity: str = "error") -> None:
    """Append a ConfigError for `obj` to ctx.problems, once (translators run per proxy and port)."""
    err = obj.error(field_path, reason, severity)
    if err not in ctx.problems:
        ctx.problems.append(err)
