"""A waypoint fixture shared by the generator and end-to-end waypoint tests.

Namespace `shop` is sidecarless (`istio.io/dataplane-mode: ambient`) and bound to the waypoint
`shop/waypoint` (class waymesh-waypoint, for service and workload traffic), realised by the WorkloadEntry `waypoint-0`. Service
`reviews` (VIP 10.96.31.10:9080) has two versions (subsets v1/v2) on their own loopback
addresses; a VirtualService splits 80/20 and sends `end-user: jason` to v2; AuthorizationPolicies
target the Gateway (ALLOW the client identity) and the Service (DENY /admin). `ratings`
(10.96.31.11:9080) has an HTTPRoute with the Service as parentRef (header match + canary).
"""

from __future__ import annotations

from pathlib import Path

from waymesh.model.proxy import GATEWAY_NAME_LABEL, ProxyInfo

TD = "cluster.local"
WAYPOINT_IP = "127.31.0.20"
REVIEWS_VIP = "10.96.31.10"
RATINGS_VIP = "10.96.31.11"
REVIEWS_V1 = "127.31.0.21"
REVIEWS_V2 = "127.31.0.22"
RATINGS_V1 = "127.31.0.23"
RATINGS_V2 = "127.31.0.24"
APP_PORT = 18080
CLIENT_ID = f"spiffe://{TD}/ns/shop/sa/client"
WAYPOINT_ID = f"spiffe://{TD}/ns/shop/sa/waypoint"


def _we(name: str, ip: str, labels: str, sa: str) -> str:
    return f"""---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: shop}}
spec: {{address: {ip}, serviceAccount: {sa}, labels: {{{labels}}}}}
"""


CONFIG = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: shop, labels: {{istio.io/waypoint-for: all}}}}
spec:
  gatewayClassName: waymesh-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
{_we("waypoint-0", WAYPOINT_IP, f"{GATEWAY_NAME_LABEL}: waypoint", "waypoint")}
{_we("reviews-v1", REVIEWS_V1, "app: reviews, version: v1", "reviews")}
{_we("reviews-v2", REVIEWS_V2, "app: reviews, version: v2", "reviews")}
{_we("ratings-v1", RATINGS_V1, "app: ratings, version: v1", "ratings")}
{_we("ratings-v2", RATINGS_V2, "app: ratings, version: v2", "ratings")}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: shop}}
spec:
  clusterIP: {REVIEWS_VIP}
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: shop}}
spec:
  clusterIP: {RATINGS_VIP}
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ratings-v1, namespace: shop}}
spec:
  clusterIP: 10.96.31.12
  selector: {{app: ratings, version: v1}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ratings-v2, namespace: shop}}
spec:
  clusterIP: 10.96.31.13
  selector: {{app: ratings, version: v2}}
  ports: [{{name: http, port: 9080, targetPort: {APP_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 80}}
    - {{destination: {{host: reviews, subset: v2}}, weight: 20}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ratings, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: ratings, port: 9080}}]
  rules:
  - matches: [{{headers: [{{name: x-canary, value: "yes"}}]}}]
    backendRefs: [{{name: ratings-v2, port: 9080}}]
  - backendRefs:
    - {{name: ratings-v1, port: 9080, weight: 90}}
    - {{name: ratings-v2, port: 9080, weight: 10}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-client, namespace: shop}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}}]
  action: ALLOW
  rules: [{{from: [{{source: {{principals: ["{TD}/ns/shop/sa/client"]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: reviews}}]
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin*"]}}}}]}}]
"""


def write_config(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mesh.yaml").write_text(CONFIG + extra)
    return folder


def waypoint_proxy_info() -> ProxyInfo:
    return ProxyInfo(id=f"waypoint~{WAYPOINT_IP}~waypoint-0.shop~shop.svc.cluster.local", kind="waypoint",
                     name="waypoint-0", namespace="shop", labels=((GATEWAY_NAME_LABEL, "waypoint"),),
                     ip=WAYPOINT_IP, metadata=(("SERVICE_ACCOUNT", "waypoint"),))


# --- a sidecar client next to sidecarless services ----------------------------------------------

SIDECAR_IP = "127.31.1.10"
INTEROP_WAYPOINT_IP = "127.31.1.20"
ECHO_IP = "127.31.1.21"
GATED_IP = "127.31.1.22"
ECHO_VIP = "10.96.32.10"
GATED_VIP = "10.96.32.11"
LIAR_IP = "127.31.1.23"  # its server presents echo's identity, not its own (liar)
LIAR_VIP = "10.96.32.12"
WEB_ID = f"spiffe://{TD}/ns/web/sa/web"
ECHO_ID = f"spiffe://{TD}/ns/ambient/sa/echo"
INTEROP_WAYPOINT_ID = f"spiffe://{TD}/ns/ambient/sa/wp"

SIDECAR_CONFIG = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: web}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: ambient, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: wp, namespace: ambient}}
spec:
  gatewayClassName: waymesh-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: web-0, namespace: web}}
spec: {{address: {SIDECAR_IP}, serviceAccount: web, labels: {{app: web, security.istio.io/tlsMode: istio}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: wp-0, namespace: ambient}}
spec: {{address: {INTEROP_WAYPOINT_IP}, serviceAccount: wp, labels: {{{GATEWAY_NAME_LABEL}: wp}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-0, namespace: ambient}}
spec: {{address: {ECHO_IP}, serviceAccount: echo, labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: gated-0, namespace: ambient}}
spec: {{address: {GATED_IP}, serviceAccount: gated, labels: {{app: gated}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: ambient}}
spec:
  clusterIP: {ECHO_VIP}
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: liar-0, namespace: ambient}}
spec: {{address: {LIAR_IP}, serviceAccount: liar, labels: {{app: liar}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: liar, namespace: ambient}}
spec:
  clusterIP: {LIAR_VIP}
  selector: {{app: liar}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: web}}
spec:
  clusterIP: 10.96.32.20
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: gated, namespace: ambient, labels: {{istio.io/use-waypoint: wp}}}}
spec:
  clusterIP: {GATED_VIP}
  selector: {{app: gated}}
  ports: [{{name: http, port: 80, targetPort: {APP_PORT}}}]
"""


def write_sidecar_config(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mesh.yaml").write_text(SIDECAR_CONFIG + extra)
    return folder
