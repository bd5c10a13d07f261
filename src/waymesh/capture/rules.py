"""The iptables rules that send a pod's TCP traffic through its proxy (Istio's istio-iptables).

Pure: `CaptureConfig` -> an `iptables-restore --noflush` script for the nat table. Applying it
(inside a network namespace) lives in `apply.py`.

What the rules do, in the order they are evaluated (same semantics as Istio's sidecar rules):

  PREROUTING (traffic arriving at the pod)
    TCP to an excluded inbound port, or to 15008/15020/15021/15090  -> untouched
    any other TCP                                                   -> REDIRECT to 15006
  OUTPUT (traffic the pod sends)
    excluded outbound port / excluded CIDR                          -> untouched
    from 127.0.0.6 on lo (the proxy's inbound passthrough to the app) -> untouched
    carrying the proxy's packet mark (--proxy-mark, optional)       -> untouched
    proxy (uid or gid) to a local non-127.0.0.1 address on lo       -> REDIRECT to 15006
        (the app called its own pod IP through a Service: the inbound side must see it)
    anyone else on lo                                               -> untouched
    proxy (uid or gid)                                              -> untouched
    to 127.0.0.1                                                    -> untouched
    any other TCP                                                   -> REDIRECT to 15001
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PROXY_UID = 1337
PROXY_GID = 1337
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
# Istio's: HBONE, agent metrics, readiness, Envoy stats.
DEFAULT_INBOUND_EXCLUDED = (15008, 15020, 15021, 15090)
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"

# Chain names; the WAYMESH_ prefix is how `remove` and `show` find them.
CHAINS = ("WAYMESH_INBOUND", "WAYMESH_IN_REDIRECT", "WAYMESH_OUTPUT", "WAYMESH_REDIRECT")


@dataclass(frozen=True)
class CaptureConfig:
    # None (both): no owner exemption at all, for a sidecarless pod whose node proxy's sockets
    # are exempt by `proxy_mark` alone (nothing in the pod may bypass capture by its uid).
    proxy_uid: int | None = PROXY_UID
    proxy_gid: int | None = PROXY_GID  # None: exempt by uid only
    outbound_port: int = OUTBOUND_CAPTURE_PORT
    inbound_port: int = INBOUND_CAPTURE_PORT
    inbound: bool = True  # False: no inbound redirect (outbound capture only)
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    # Packets of sockets with this SO_MARK are not captured (a node proxy that owns sockets in
    # the pod's namespace marks them, as ztunnel does with 0x539); None: no mark exemption.
    proxy_mark: int | None = None
    # Kept so the exemption of the proxy's own health/metrics ports can be turned off in tests.
    default_inbound_excluded: tuple[int, ...] = field(default=DEFAULT_INBOUND_EXCLUDED)

    def __post_init__(self) -> None:
        for p in (self.outbound_port, self.inbound_port, *self.exclude_inbound_ports, *self.exclude_outbound_ports):
            if not 1 <= p <= 65535:
                raise ValueError(f"port {p} is out of range 1-65535")
        for c in self.exclude_outbound_cidrs:
            ipaddress.IPv4Network(c, strict=False)  # raises ValueError naming the bad CIDR


def parse_ports(text: str) -> tuple[int, ...]:
    """'80,443' -> (80, 443); '' -> (). Raises ValueError naming the bad item."""
    out: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise ValueError(f"{item!r} is not a port number (1-65535)")
        out.append(int(item))
    return tuple(out)


def parse_cidrs(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(str(ipaddress.IPv4Network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IPv4 CIDR") from None
    return tuple(out)


def _owner_matches(cfg: CaptureConfig) -> list[str]:
    matches = [f"--uid-owner {cfg.proxy_uid}"] if cfg.proxy_uid is not None else []
    if cfg.proxy_gid is not None:
        matches.append(f"--gid-owner {cfg.proxy_gid}")
    return matches


def restore_script(cfg: CaptureConfig) -> str:
    """An `iptables-restore --noflush` script for the nat table (creates and fills the chains)."""
    lines = ["*nat"]
    lines += [f":{c} - [0:0]" for c in CHAINS]
    add = lines.append
    add(f"-A WAYMESH_REDIRECT -p tcp -j REDIRECT --to-ports {cfg.outbound_port}")
    add(f"-A WAYMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {cfg.inbound_port}")
    if cfg.inbound:
        for port in (*cfg.default_inbound_excluded, *cfg.exclude_inbound_ports):
            add(f"-A WAYMESH_INBOUND -p tcp --dport {port} -j RETURN")
        add("-A WAYMESH_INBOUND -p tcp -j WAYMESH_IN_REDIRECT")
        add("-A PREROUTING -p tcp -j WAYMESH_INBOUND")
    for port in cfg.exclude_outbound_ports:
        add(f"-A WAYMESH_OUTPUT -p tcp --dport {port} -j RETURN")
    for cidr in cfg.exclude_outbound_cidrs:
        add(f"-A WAYMESH_OUTPUT -d {cidr} -j RETURN")
    add(f"-A WAYMESH_OUTPUT -s {INBOUND_PASSTHROUGH_SOURCE}/32 -o lo -j RETURN")
    if cfg.proxy_mark is not None:
        add(f"-A WAYMESH_OUTPUT -m mark --mark {cfg.proxy_mark:#x} -j RETURN")
    owners = _owner_matches(cfg)
    if cfg.inbound:
        for owner in owners:
            add(f"-A WAYMESH_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp ! --dport 15008 -m owner {owner} -j WAYMESH_IN_REDIRECT")
    # Loopback traffic of anyone but the proxy (neither its uid nor its gid) stays local.
    not_proxy = " ".join("! " + o for o in owners)
    add(f"-A WAYMESH_OUTPUT -o lo -m owner {not_proxy} -j RETURN" if owners else "-A WAYMESH_OUTPUT -o lo -j RETURN")
    for owner in owners:
        add(f"-A WAYMESH_OUTPUT -m owner {owner} -j RETURN")
    add("-A WAYMESH_OUTPUT -d 127.0.0.1/32 -j RETURN")
    add("-A WAYMESH_OUTPUT -j WAYMESH_REDIRECT")
    add("-A OUTPUT -p tcp -j WAYMESH_OUTPUT")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
