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

With `preserve_source` (sidecarless pods; ztunnel's in-pod rules), the node proxy connects to
the app from the client's address (IP_TRANSPARENT socket in the pod's netns, bound to the
client's IP, carrying the proxy mark). The app's replies go to a non-local address and would
leave via eth0; these rules deliver them locally to the proxy's socket instead:

  mangle PREROUTING: a packet with the proxy mark from a non-local source (the proxy's
      transparent connection looping through lo)  -> CONNMARK its connection SOURCE_MARK
  mangle OUTPUT: a packet of such a connection (the app's reply) -> its mark = the connmark
      (a mark changed in mangle OUTPUT makes the kernel route the packet again)
  ip rule fwmark SOURCE_MARK/SOURCE_MASK lookup SOURCE_TABLE, and in that table
  `local 0.0.0.0/0 dev lo`: every address is local for marked packets -> back in through lo to
      the transparent socket.
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
MANGLE_CHAINS = ("WAYMESH_PRERT", "WAYMESH_MANGLE_OUT")
# Source preservation (ztunnel uses the same values: they must not clash with other marks in
# the pod, and the table must be unused there).
SOURCE_MARK = 0x111
SOURCE_MASK = 0xFFF
SOURCE_TABLE = 100
SOURCE_RULE_PRIORITY = 32764  # before `main` (32766)


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
    # The proxy connects to the app from the client's address (needs proxy_mark): mangle rules
    # plus a policy route bring the app's replies back to the proxy (see the module docstring).
    preserve_source: bool = False

    def __post_init__(self) -> None:
        if self.preserve_source and self.proxy_mark is None:
            raise ValueError("preserve-source needs a proxy mark (--proxy-mark): it recognises the proxy's connections by it")
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


def mangle_script(cfg: CaptureConfig) -> str:
    """The mangle-table part of source preservation ('' when it is off)."""
    if not cfg.preserve_source or cfg.proxy_mark is None:
        return ""
    mark, mask = f"{SOURCE_MARK:#x}", f"{SOURCE_MASK:#x}"
    lines = ["*mangle", *(f":{c} - [0:0]" for c in MANGLE_CHAINS)]
    lines += [
        # the proxy's packets to the app (through lo, the client's address as source)
        f"-A WAYMESH_PRERT -p tcp -m mark --mark {cfg.proxy_mark:#x} -m addrtype ! --src-type LOCAL"
        f" -j CONNMARK --set-xmark {mark}/{mask}",
        # the app's packets on those connections: marked so the policy route applies
        f"-A WAYMESH_MANGLE_OUT -p tcp -m connmark --mark {mark}/{mask} -j CONNMARK --restore-mark --nfmask {mask} --ctmask {mask}",
        "-A PREROUTING -j WAYMESH_PRERT",
        "-A OUTPUT -j WAYMESH_MANGLE_OUT",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def route_commands() -> list[list[str]]:
    """`ip` commands (without the `ip` and netns prefix) of source preservation's policy route."""
    return [
        ["rule", "add", "fwmark", f"{SOURCE_MARK:#x}/{SOURCE_MASK:#x}", "pref", str(SOURCE_RULE_PRIORITY), "lookup", str(SOURCE_TABLE)],
        ["route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", str(SOURCE_TABLE)],
    ]
