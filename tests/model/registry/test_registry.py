from __future__ import annotations

from waymesh.config.types import ISTIO_NETWORKING, ConfigKey
from waymesh.model import ir
from waymesh.model.registry import Registry, ServicePort

from .conftest import make_store

SERVICE_ENTRIES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static-se, namespace: apps}
spec:
  hosts: [static.example.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 9000, name: grpc-api, protocol: GRPC}
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    labels: {version: v1}
  - address: 10.0.0.2
    ports: {http: 9090}
    weight: 3
    locality: us-east/a
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-se, namespace: apps}
spec:
  hosts: [api.example.com, www.example.com]
  location: MESH_EXTERNAL
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: selected, namespace: apps}
spec:
  hosts: [vm.apps.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  workloadSelector:
    labels: {app: vm}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: apps}
spec:
  address: 10.1.0.1
  labels: {app: vm, version: v2}
  ports: {http: 8081}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-other-ns, namespace: other}
spec:
  address: 10.1.0.9
  labels: {app: vm}
"""

K8S = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9080}
  - {name: grpc-x, port: 9090, targetPort: grpc}
  - {name: metrics, port: 15020, appProtocol: http2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc
  namespace: bookinfo
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
ports:
- {name: http, port: 9080}
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
- addresses: [10.244.0.6]
  conditions: {ready: false}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm, namespace: bookinfo}
spec:
  address: 192.168.1.10
  labels: {app: reviews, version: v3}
  ports: {grpc: 7070}
"""


def test_service_entry_static_endpoints_and_target_ports():
    reg = Registry(make_store(SERVICE_ENTRIES))
    svc = reg.service("STATIC.example.internal")
    assert svc is not None
    assert svc.resolution == "STATIC" and svc.namespace == "apps"
    assert svc.port(80) == ServicePort(80, "http", "HTTP", 8080)
    assert svc.port(9000).protocol == "GRPC"
    assert reg.endpoints(svc, 80) == [
        ir.Endpoint("10.0.0.1", 8080, labels=(("version", "v1"),)),
        ir.Endpoint("10.0.0.2", 9090, weight=3, locality="us-east/a"),
    ]
    assert [e.port for e in reg.endpoints(svc, 9000)] == [9000, 9000]
    assert reg.endpoints(svc, 1234) == []


def test_service_entry_dns_uses_hosts_as_endpoints():
    reg = Registry(make_store(SERVICE_ENTRIES))
    svc = reg.service("www.example.com")
    assert svc.resolution == "DNS" and svc.location == "MESH_EXTERNAL"
    assert reg.endpoints(svc, 443) == [ir.Endpoint("www.example.com", 443)]


def test_service_entry_workload_selector_same_namespace_only():
    reg = Registry(make_store(SERVICE_ENTRIES))
    svc = reg.service("vm.apps.internal")
    eps = reg.endpoints(svc, 80)
    assert [(e.address, e.port) for e in eps] == [("10.1.0.1", 8081)]
    assert dict(eps[0].labels)["version"] == "v2"


def test_k8s_service_endpoint_slices_and_workload_entries():
    reg = Registry(make_store(K8S))
    svc = reg.k8s_service("bookinfo", "reviews")
    assert svc is not None and svc.hostname == "reviews.bookinfo.svc.cluster.local"
    assert [p.protocol for p in svc.ports] == ["HTTP", "GRPC", "HTTP2"]
    assert svc.port(9090).target_port is None  # named target port
    eps = reg.endpoints(svc, 9080)
    assert {(e.address, e.port, e.healthy) for e in eps} == {
        ("192.168.1.10", 9080, True),
        ("10.244.0.5", 9080, True),
        ("10.244.0.6", 9080, False),
    }
    # Named targetPort: only workloads exposing that port name.
    assert [(e.address, e.port) for e in reg.endpoints(svc, 9090)] == [("192.168.1.10", 7070)]


def test_incremental_update_by_source_key():
    store = make_store(SERVICE_ENTRIES)
    reg = Registry(store)
    key = ConfigKey(ISTIO_NETWORKING, "ServiceEntry", "apps", "dns-se")
    assert len(reg.services_from(key)) == 2
    store.apply_source("test.yaml", [o for o in store.all() if o.key != key])
    assert reg.update(key) is True
    assert reg.service("api.example.com") is None
    assert reg.update(key) is False


def test_k8s_service_wins_over_service_entry_for_same_host():
    text = K8S + """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadow, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  ports: [{number: 1, name: tcp, protocol: TCP}]
  resolution: DNS
"""
    reg = Registry(make_store(text))
    assert reg.service("reviews.bookinfo.svc.cluster.local").source.kind == "Service"
