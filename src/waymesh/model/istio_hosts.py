"""Host names as Istio reads them: validation, short-name expansion and wildcard matching."""

from __future__ import annotations

import ipaddress
import re

CLUSTER_DOMAIN = "cluster.local"

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_hostname(host: str, *, allow_wildcard: bool = True, allow_ip: bool = False) -> str | None:
    """Why `host` is not a valid Istio host name, or None when it is.

    Istio accepts a DNS name, optionally starting with a `*.` wildcard label, or `*` alone.
    """
    if not host:
        return "host must not be empty"
    if len(host) > 255:
        return f"host {host!r} is longer than 255 characters"
    if host == "*":
        return None if allow_wildcard else "host must not be the wildcard '*'"
    if allow_ip and is_ip(host):
        return None
    name = host
    if name.startswith("*."):
        if not allow_wildcard:
            return f"host {host!r} must not be a wildcard"
        name = name[2:]
    elif name.startswith("*"):
        # Istio allows "*foo.com"-style partial wildcards only as a whole first label.
        return f"host {host!r}: a wildcard must be a whole first label, as in '*.example.com'"
    for label in name.rstrip(".").split("."):
        if len(label) > 63 or not _LABEL.match(label.lower()):
            return f"host {host!r} is not a valid DNS name (label {label!r})"
    return None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def fqdn(host: str, namespace: str) -> str:
    """Expand a Kubernetes short name the way Istio does: `reviews` -> `reviews.<ns>.svc.cluster.local`.

    Names with a dot, wildcards and IPs are taken as written (lower-cased).
    """
    host = host.lower()
    if host == "*" or host.startswith("*") or "." in host or is_ip(host):
        return host
    return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def host_matches(pattern: str, host: str) -> bool:
    """True when `pattern` (exact or `*.suffix` or `*`) covers `host` (itself possibly a wildcard)."""
    pattern, host = pattern.lower(), host.lower()
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]  # ".example.com"
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    return False


def hosts_intersect(a: str, b: str) -> bool:
    """True when some concrete host name is matched by both `a` and `b`."""
    return host_matches(a, b) or host_matches(b, a)


def more_specific(host: str) -> tuple[int, int]:
    """Sort key: exact names before wildcards, longer wildcards before shorter ones."""
    wildcard = host.startswith("*")
    return (1 if wildcard else 0, -len(host))
