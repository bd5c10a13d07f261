"""Which generated bodies break a rule the Gateway API models enforce beyond the structural schema.

The CRD schema helper (tests/config/crd_schema.py) does not know CEL rules
(`x-kubernetes-validations`) nor the Kubernetes label-selector operator set; the models do. A
body is "CEL-invalid" when the model rejects it only through one of its own rules: a
`model_validator` (pydantic error type `value_error`) or a selector operator outside In, NotIn,
Exists, DoesNotExist. `tests/config/test_config_crd_conformance.py` can register
`breaks_model_rule(kind)` in CEL_RULES for every Gateway API kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from waymesh.config.kinds import lookup_kind
from waymesh.config.types import GATEWAY_API


def _rule_error(err: dict[str, Any]) -> bool:
    if err["type"] == "value_error":
        return True
    return err["type"] == "literal_error" and err["loc"] and err["loc"][-1] == "operator"


def breaks_model_rule(kind: str) -> Callable[[Any], bool]:
    info = lookup_kind(GATEWAY_API, kind)
    assert info is not None

    def check(body: Any) -> bool:
        try:
            info.model.model_validate(body)
        except ValidationError as e:
            return any(_rule_error(err) for err in e.errors())
        return False

    return check
