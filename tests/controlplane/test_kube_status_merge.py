"""The pure parts of the Kubernetes status writer: per-controller merge and kept transition times."""

from __future__ import annotations

import copy

from waymesh.controlplane.kube_status import keep_transition_times, merge_entries

OURS = ("waymesh.io/gateway-controller", "istio.io/gateway-controller")


def _cond(ctype: str, status: str, since: str) -> dict:
    return {"type": ctype, "status": status, "lastTransitionTime": since, "reason": ctype, "message": ""}


def _parent(name: str, controller: str, *conds: dict) -> dict:
    return {"parentRef": {"name": name}, "controllerName": controller, "conditions": list(conds)}


def test_merge_keeps_other_controllers_and_replaces_ours() -> None:
    theirs = _parent("a", "example.com/other", _cond("Accepted", "True", "t0"))
    old_ours = _parent("gw", OURS[0], _cond("Accepted", "True", "t0"))
    stale = _parent("gone", OURS[0], _cond("Accepted", "True", "t0"))
    new_ours = _parent("gw", OURS[0], _cond("Accepted", "False", "t1"))
    merged = merge_entries([old_ours, theirs, stale], [new_ours], OURS)
    assert merged == [theirs, new_ours]
    assert merge_entries([theirs, old_ours], [], OURS) == [theirs]


def test_transition_time_kept_only_when_status_unchanged() -> None:
    old = {
        "conditions": [_cond("Accepted", "True", "t0"), _cond("Programmed", "False", "t0")],
        "listeners": [{"name": "http", "conditions": [_cond("Accepted", "True", "t0")]}],
        "parents": [_parent("gw", OURS[0], _cond("Accepted", "True", "t0"))],
    }
    new = copy.deepcopy(old)
    for cond in new["conditions"]:
        cond["lastTransitionTime"] = "t9"
    new["conditions"][1]["status"] = "True"
    new["listeners"][0]["conditions"][0]["lastTransitionTime"] = "t9"
    new["parents"][0]["conditions"][0]["lastTransitionTime"] = "t9"
    new["parents"].append(_parent("other", OURS[0], _cond("Accepted", "True", "t9")))
    keep_transition_times(new, old)
    assert [c["lastTransitionTime"] for c in new["conditions"]] == ["t0", "t9"]  # Programmed changed
    assert new["listeners"][0]["conditions"][0]["lastTransitionTime"] == "t0"
    assert new["parents"][0]["conditions"][0]["lastTransitionTime"] == "t0"
    assert new["parents"][1]["conditions"][0]["lastTransitionTime"] == "t9"  # a new parent entry
