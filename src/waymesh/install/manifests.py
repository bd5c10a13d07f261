"""The Kubernetes manifests that install waymesh's control plane.

One source for both install paths: `waymesh install manifests` prints these objects, and
`waymesh install chart` writes them as Helm templates (waymesh.install.chart), so the two cannot
drift. Names match what the control plane's Kubernetes code expects (the webhook configuration
`waymesh-sidecar-injector`, the Service `waymesh-control-plane`, see controlplane/kube_webhook.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from waymesh import __version__

NAME = "waymesh-control-plane"
WEBHOOK_CONFIG = "waymesh-sidecar-injector"
WEBHOOK_CERT_SECRET = "waymesh-webhook-cert"
INJECT_LABEL = "sidecar.istio.io/inject"

Obj = dict[str, Any]


@dataclass
class InstallValues:
    """The settings a user may change (Helm values). Strings may be template placeholders."""

    namespace: str = "waymesh-system"
    image_repository: str = "waymesh"
    image_tag: str = __version__
    pull_policy: str = "IfNotPresent"
    # All replicas serve xDS and the webhook; one, elected with a Lease, writes status.
    replicas: int | str = 2
    log_level: str = "info"

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag}"


def labels(component: str = "control-plane") -> dict[str, str]:
    return {"app": NAME, "app.kubernetes.io/name": "waymesh", "app.kubernetes.io/component": component}


def namespace(v: InstallValues) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": v.namespace, "labels": labels()}}


def service_account(v: InstallValues) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": v.namespace, "labels": labels()},
    }


_READ = ["get", "list", "watch"]
_WRITE = ["create", "update", "patch", "delete"]


def cluster_role() -> Obj:
    rules = [
        # The service registry and credentialName Secrets.
        {"apiGroups": [""], "resources": ["namespaces", "services", "pods", "secrets", "nodes"], "verbs": _READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
        # Istio config, and its status (validation messages).
        *(
            {"apiGroups": [group], "resources": ["*"], "verbs": _READ}
            for group in ("networking.istio.io", "security.istio.io", "telemetry.istio.io")
        ),
        {
            "apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io"],
            "resources": ["*/status"],
            "verbs": ["get", "update", "patch"],
        },
        # Gateway API config and the status waymesh writes for its GatewayClasses, Gateways, routes.
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["*"], "verbs": _READ},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["*/status"], "verbs": ["get", "update", "patch"]},
        # Automated deployment: a Deployment, Service and ServiceAccount per Gateway, in its namespace.
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _READ + _WRITE},
        {"apiGroups": [""], "resources": ["services", "serviceaccounts"], "verbs": _READ + _WRITE},
        # The injector publishes its CA into its own webhook configuration, and nothing else.
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "verbs": _READ,
        },
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [WEBHOOK_CONFIG],
            "verbs": ["update", "patch"],
        },
        # The CA's root as ConfigMap waymesh-ca-root-cert in every namespace (for sidecars).
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": _READ + ["create", "update", "patch"]},
        # Proxies authenticate to the CA (15012) with their ServiceAccount tokens.
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": NAME, "labels": labels()},
        "rules": rules,
    }


def cluster_role_binding(v: InstallValues) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": NAME, "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": v.namespace}],
    }


def role(v: InstallValues) -> Obj:
    """What the control plane writes in its own namespace: the leader Lease, the webhook's cert."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": NAME, "namespace": v.namespace, "labels": labels()},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": _READ + _WRITE},
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": _READ + _WRITE},
        ],
    }


def role_binding(v: InstallValues) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": NAME, "namespace": v.namespace, "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": v.namespace}],
    }


PORTS = [  # (name, service port, container port)
    ("grpc-xds", 15010, 15010),  # xDS, plaintext
    ("grpc-xds-tls", 15012, 15012),  # xDS and certificate signing over mTLS
    ("http-monitoring", 15014, 15014),  # metrics and debug endpoints
    ("https-webhook", 443, 15017),  # sidecar injection
]


def service(v: InstallValues) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": v.namespace, "labels": labels()},
        "spec": {
            "selector": {"app": NAME},
            "ports": [
                {"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for n, p, t in PORTS
            ],
        },
    }


def deployment(v: InstallValues) -> Obj:
    def field_env(name: str, path: str) -> Obj:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    container = {
        "name": "control-plane",
        "image": v.image,
        "imagePullPolicy": v.pull_policy,
        "args": [
            "control-plane",
            "--in-cluster",
            "--leader-elect",
            # Reachable from the Service and probes, not only from inside the Pod.
            "--debug-address=0.0.0.0:15014",
            f"--log-level={v.log_level}",
            # Injected sidecars and deployed gateways run the same image.
            f"--proxy-image={v.image}",
        ],
        "env": [
            field_env("POD_NAME", "metadata.name"),  # leader-election identity
            field_env("POD_NAMESPACE", "metadata.namespace"),
            # CA state (a self-signed root when no cacerts are plugged in); the root filesystem is read-only.
            {"name": "WAYMESH_STATE_DIR", "value": "/var/lib/waymesh"},
        ],
        "ports": [{"name": n, "containerPort": t, "protocol": "TCP"} for n, _, t in PORTS],
        "readinessProbe": {"tcpSocket": {"port": 15010}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1337,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # webhook cert files
            {"name": "state", "mountPath": "/var/lib/waymesh"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": v.namespace, "labels": labels()},
        "spec": {
            "replicas": v.replicas,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": NAME,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "state", "emptyDir": {}}],
                },
            },
        },
    }


def webhook_configuration(v: InstallValues) -> Obj:
    """Injection for Pods in namespaces labelled `waymesh-injection: enabled` (or Istio's
    `istio-injection: enabled`), and for Pods labelled `sidecar.istio.io/inject: "true"` in
    unlabelled namespaces. A namespace selector cannot OR two labels, hence three webhooks with
    disjoint selectors (a Pod is never injected twice). caBundle is filled in by the control plane."""

    def hook(name: str, ns_selector: Obj, obj_selector: Obj) -> Obj:
        return {
            "name": name,
            "clientConfig": {"service": {"name": NAME, "namespace": v.namespace, "path": "/inject", "port": 443}},
            "rules": [
                {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
            ],
            "namespaceSelector": ns_selector,
            "objectSelector": obj_selector,
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
        }

    not_opted_out = {"matchExpressions": [{"key": INJECT_LABEL, "operator": "NotIn", "values": ["false"]}]}
    opted_in = {"matchExpressions": [{"key": INJECT_LABEL, "operator": "In", "values": ["true"]}]}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIG, "labels": labels("sidecar-injector")},
        "webhooks": [
            hook("namespace.sidecar-injector.waymesh.io",
                 {"matchLabels": {"waymesh-injection": "enabled"}}, not_opted_out),
            hook(
                "istio-namespace.sidecar-injector.waymesh.io",
                {"matchExpressions": [
                    {"key": "istio-injection", "operator": "In", "values": ["enabled"]},
                    {"key": "waymesh-injection", "operator": "DoesNotExist"},
                ]},
                not_opted_out,
            ),
            hook(
                "object.sidecar-injector.waymesh.io",
                {"matchExpressions": [
                    {"key": "waymesh-injection", "operator": "DoesNotExist"},
                    {"key": "istio-injection", "operator": "DoesNotExist"},
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                     "values": ["kube-system", "kube-public", "kube-node-lease"]},
                ]},
                opted_in,
            ),
        ],
    }


# Chart template file -> the objects in it (the chart and `install manifests` share this order).
def grouped(v: InstallValues) -> dict[str, list[Obj]]:
    return {
        "namespace.yaml": [namespace(v)],
        "serviceaccount.yaml": [service_account(v)],
        "rbac.yaml": [cluster_role(), cluster_role_binding(v), role(v), role_binding(v)],
        "service.yaml": [service(v)],
        "deployment.yaml": [deployment(v)],
        "webhook.yaml": [webhook_configuration(v)],
    }


def manifests(v: InstallValues | None = None, *, crds: bool = True, create_namespace: bool = True) -> list[Obj]:
    """Everything `kubectl apply -f -` needs, in apply order (CRDs and Namespace first)."""
    from waymesh.install import crds as crd_module

    v = v or InstallValues()
    out: list[Obj] = crd_module.crds() if crds else []
    for file, objs in grouped(v).items():
        if file == "namespace.yaml" and not create_namespace:
            continue
        out += objs
    return out
