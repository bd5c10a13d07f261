"""IR for HBONE (HTTP/2 CONNECT over mTLS on 15008), shared by waypoints and sidecars.

Plain `ir` has no notion of tunnels; these subclasses add it without changing what the rest of
the pipeline sees (they are Listeners and Clusters, so policy, caching and `proxy-config` work as
for any other). `generate/envoy_hbone.py` turns them into Envoy config:

- `HboneTerminate` (`connect_terminate`, 0.0.0.0:15008): mTLS with the workload certificate,
  HTTP/2, CONNECT only; each CONNECT stream is handed to the internal listener `inner` with the
  `:authority` as its original destination and the peer's SPIFFE id in filter state.
- `InternalListener`: an Envoy internal listener (no socket); its chains match the restored
  destination (`DestinationMatch`: addresses + port), so each chain is one service port.
- `HboneCluster`: a cluster some (or all) of whose endpoints are reached through a tunnel
  (`TunnelEndpoint`: CONNECT to `address` (ip:15008) with `:authority` `destination`, expecting
  the server to be `identity`). Plain `endpoints` keep the cluster's own TLS settings.
- For each expected identity, `hbone_plumbing` adds the originate listener and cluster
  (`connect_originate|<identity>`): tcp_proxy with tunneling_config over an ORIGINAL_DST HTTP/2
  cluster with mTLS that checks the server's URI SAN.
"""

from __future__ import annotations

from dataclasses import dataclass

from waymesh.model import ir

HBONE_PORT = 15008
TERMINATE = "connect_terminate"
INNER = "main_internal"
ORIGINATE = "connect_originate"


@dataclass(frozen=True)
class DestinationMatch(ir.ChainMatch):
    """A chain of an internal listener for one destination (any of `addresses`, at destination_port)."""

    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class HboneTerminate(ir.Listener):
    inner: str = INNER


@dataclass(frozen=True)
class InternalListener(ir.Listener):
    """Chains see the original destination and source restored from the terminating stream."""


@dataclass(frozen=True)
class InternalCluster(ir.Cluster):
    """Connects to the internal listener `listener` (filter state shared with upstream goes along)."""

    listener: str = INNER


@dataclass(frozen=True)
class TunnelEndpoint:
    destination: str  # "ip:port": the CONNECT :authority
    address: str  # "ip:15008": where the tunnel goes (the pod, or the waypoint)
    identity: str = ""  # expected server URI SAN; "": any certificate of the mesh trust bundle
    weight: int = 1
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HboneCluster(ir.Cluster):
    tunnels: tuple[TunnelEndpoint, ...] = ()


@dataclass(frozen=True)
class HboneOriginate(ir.Listener):
    """Internal listener: tcp_proxy that tunnels the stream to the ORIGINAL_DST cluster `cluster`."""

    cluster: str = ""


@dataclass(frozen=True)
class HboneOriginateCluster(ir.Cluster):
    identity: str = ""
    # Set: dial the connection's own (restored) destination address at this port, instead of
    # the `tunnel.address` metadata (tunnels to a workload's original destination).
    port_override: int | None = None


@dataclass(frozen=True)
class TunnelTcpChain(ir.TcpFilterChain):
    """tcp_proxy that tunnels to its cluster with CONNECT `:authority` = `hostname` (a format string)."""

    hostname: str = "%DOWNSTREAM_LOCAL_ADDRESS%"


def workload_originate(identity: str) -> HboneOriginateCluster:
    """HBONE to the connection's destination pod itself (`<its ip>:15008`, authority = ip:port)."""
    return HboneOriginateCluster(name=f"connect_originate_workload|{identity.removeprefix('spiffe://')}",
                                 discovery=ir.Discovery.ORIGINAL_DST, protocol="http2", identity=identity,
                                 port_override=HBONE_PORT)


def originate_name(identity: str) -> str:
    return f"{ORIGINATE}|{identity.removeprefix('spiffe://')}" if identity else ORIGINATE


def terminate_listener(access_log_path: str | None = None, access_log_json: bool = False) -> HboneTerminate:
    return HboneTerminate(name=TERMINATE, address="0.0.0.0", port=HBONE_PORT, filter_chains=(),
                          direction="INBOUND", access_log_path=access_log_path, access_log_json=access_log_json)


def inner_cluster() -> InternalCluster:
    return InternalCluster(name=INNER, discovery=ir.Discovery.STRICT_DNS, protocol="tcp", listener=INNER)


def hbone_plumbing(clusters: tuple[ir.Cluster, ...], access_log_path: str | None = None,
                   access_log_json: bool = False) -> tuple[tuple[ir.Listener, ...], tuple[ir.Cluster, ...]]:
    """Originate listeners and clusters for every identity the HBONE clusters expect."""
    identities = sorted({t.identity for c in clusters if isinstance(c, HboneCluster) for t in c.tunnels})
    listeners: list[ir.Listener] = []
    out: list[ir.Cluster] = []
    for identity in identities:
        name = originate_name(identity)
        # OUTBOUND: a client-side hop, so server-side policy is not put on it.
        listeners.append(HboneOriginate(name=name, address="0.0.0.0", port=0, filter_chains=(), direction="OUTBOUND",
                                        cluster=name, access_log_path=access_log_path,
                                        access_log_json=access_log_json))
        out.append(HboneOriginateCluster(name=name, discovery=ir.Discovery.ORIGINAL_DST, protocol="http2",
                                         identity=identity))
    return tuple(listeners), tuple(out)
