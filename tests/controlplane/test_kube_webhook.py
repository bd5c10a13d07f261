"""AdmissionReview handling and the serving certificate's reuse rules (no API server needed)."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from waymesh.ca.selfsigned import issue_self_signed
from waymesh.controlplane.kube_inject import InjectionOptions
from waymesh.controlplane.kube_webhook import BadReview, certificate_usable, review_response

ENABLED = {"waymesh-injection": "enabled"}


def review(obj: dict, operation: str = "CREATE") -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "shop",
            "operation": operation,
            "object": obj,
        },
    }


POD = {"metadata": {"generateName": "shop-"}, "spec": {"containers": [{"name": "app", "image": "a"}]}}


def test_response_echoes_uid_and_carries_a_base64_json_patch():
    out = review_response(review(json.loads(json.dumps(POD))), ENABLED, InjectionOptions())
    resp = out["response"]
    assert out["kind"] == "AdmissionReview" and out["apiVersion"] == "admission.k8s.io/v1"
    assert resp["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002" and resp["allowed"] is True
    assert resp["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(resp["patch"]))
    assert {op["path"] for op in ops} >= {"/spec/initContainers", "/spec/containers/-"}


def test_not_injected_means_allowed_without_patch():
    resp = review_response(review(json.loads(json.dumps(POD))), {}, InjectionOptions())["response"]
    assert resp == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}
    resp = review_response(review(json.loads(json.dumps(POD)), "UPDATE"), ENABLED, InjectionOptions())["response"]
    assert "patch" not in resp


def test_malformed_annotation_is_refused_with_its_name():
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["annotations"] = {"traffic.sidecar.istio.io/excludeOutboundIPRanges": "nope"}
    resp = review_response(review(pod), ENABLED, InjectionOptions())["response"]
    assert resp["allowed"] is False and resp["status"]["code"] == 400
    assert "excludeOutboundIPRanges" in resp["status"]["message"]


@pytest.mark.parametrize("body", [{}, {"kind": "AdmissionReview"}, {"kind": "Pod", "request": {"uid": "x"}}, []])
def test_not_an_admission_review_is_a_bad_review(body):
    with pytest.raises(BadReview):
        review_response(body, ENABLED, InjectionOptions())


def test_certificate_reused_only_when_it_covers_the_names_and_is_not_expiring():
    hosts = ["svc", "svc.ns.svc", "127.0.0.1"]
    issued = issue_self_signed(hosts, days=365)
    assert certificate_usable(issued, hosts)
    assert not certificate_usable(issued, [*hosts, "svc.other.svc"])
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=340)
    assert not certificate_usable(issued, hosts, now=later)
