"""HBONE (model/waypoint_ir.py): a waypoint's terminate listener, its internal listener with one
service chain (VIP:port) and one workload chain, a service cluster with a tunnelled endpoint next
to a sidecar endpoint (mesh mTLS), and the originate listeners and clusters per identity.

Shows: CONNECT-only HTTP/2 with set_filter_state (authority -> original destination, peer URI
SAN -> io.waymesh.peer_principal, shared with the internal connection); internal addresses with
`tunnel` metadata passed through internal_upstream; tcp_proxy tunneling_config over ORIGINAL_DST
clusters (metadata address, or the restored destination with port 15008) with SAN checks.
"""

from waymesh.model import ir
from waymesh.model import waypoint_ir as hb

REVIEWS = "spiffe://cluster.local/ns/shop/sa/reviews"
MESH_TLS = ir.UpstreamTLS(mode="MUTUAL", sni="outbound_.9080_._.reviews.shop.svc.cluster.local",
                          validation=ir.WORKLOAD_ROOTS, certificate=ir.WORKLOAD_CERT,
                          subject_alt_names=(REVIEWS,), alpn=("istio", "http/1.1"))
SERVICE = hb.HboneCluster(
    name="outbound|9080||reviews.shop.svc.cluster.local", discovery=ir.Discovery.STRICT_DNS, protocol="http1",
    endpoints=(ir.Endpoint("10.0.0.7", 9080, labels=((ir.TLS_MODE_LABEL, "istio"),)),),
    tls_matches=(ir.TransportSocketMatch("tlsMode-istio", (("tlsMode", "istio"),), MESH_TLS),
                 ir.TransportSocketMatch("tlsMode-disabled", (), None)),
    tunnels=(hb.TunnelEndpoint("10.0.0.8:9080", "10.0.0.8:15008", REVIEWS, labels=(("app", "reviews"),)),),
)
WORKLOAD = hb.workload_originate(REVIEWS)
INNER = hb.InternalListener(
    name=hb.INNER, address="0.0.0.0", port=0, direction="OUTBOUND", access_log_path="/dev/stdout",
    filter_chains=(
        ir.HttpFilterChain(route_table="waypoint|9080|reviews.shop.svc.cluster.local",
                           match=hb.DestinationMatch(destination_port=9080, addresses=("10.96.0.10",)),
                           name="reviews.shop.svc.cluster.local:9080", use_remote_address=False),
        hb.TunnelTcpChain(clusters=(ir.WeightedCluster(WORKLOAD.name),),
                          match=hb.DestinationMatch(addresses=("10.0.0.8",)), name="workload|shop/reviews-0"),
        ir.TcpFilterChain(clusters=(ir.WeightedCluster("BlackHoleCluster"),), name="no-service"),
    ),
)
ROUTES = ir.RouteTable(name="waypoint|9080|reviews.shop.svc.cluster.local", virtual_hosts=(ir.VirtualHost(
    name="reviews.shop.svc.cluster.local:9080", domains=("*",), routes=(ir.Route(
        name="default", matches=(), action=ir.ForwardAction(clusters=(ir.WeightedCluster(SERVICE.name),))),)),))
ORIGINATE_LISTENERS, ORIGINATE_CLUSTERS = hb.hbone_plumbing((SERVICE,), "/dev/stdout")

CONFIG = ir.ProxyConfig(
    listeners=(hb.terminate_listener("/dev/stdout"), INNER, *ORIGINATE_LISTENERS),
    route_tables=(ROUTES,),
    clusters=(hb.inner_cluster(), SERVICE, WORKLOAD, *ORIGINATE_CLUSTERS,
              ir.Cluster(name="BlackHoleCluster", discovery=ir.Discovery.EDS, protocol="tcp")),
)
