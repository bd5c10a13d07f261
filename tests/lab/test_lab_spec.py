"""LAB.yaml validation, generated mesh config, capture rule text, TLS detection: no root needed."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from waymesh.capture.rules import CaptureConfig, parse_cidrs, parse_ports, restore_script
from waymesh.config.loader import load_text
from waymesh.lab import meshconfig
from waymesh.lab.spec import LabSpecError, parse_lab
from waymesh.lab.state import PodState
from waymesh.lab.testing import looks_like_tls, unique_name
from waymesh.model.service_vips import auto_vip

GOOD = """\
name: shop
hosts:
- name: node-1
- name: node-2
pods:
- name: web
  host: node-1
  labels: {app: web}
  command: waymesh echo --port 9080 --name web
  sidecar: true
- name: cart
  host: node-2
  namespace: shop
  serviceAccount: cart
  labels: {app: cart, version: v1}
  command: [waymesh, echo, --port, "9080"]
services:
- name: cart
  namespace: shop
  ports: [{port: 80, targetPort: 9080, protocol: HTTP}]
  selector: {app: cart}
"""


def _error(text: str) -> str:
    with pytest.raises(LabSpecError) as e:
        parse_lab(text, "lab.yaml")
    assert len(e.value.errors) >= 1
    return str(e.value.errors[0])


def test_good_spec_parses() -> None:
    spec = parse_lab(GOOD)
    assert [p.name for p in spec.pods] == ["web", "cart"]
    assert spec.pods[0].argv() == ["waymesh", "echo", "--port", "9080", "--name", "web"]
    assert spec.host_of(spec.pods[1]) == "node-2"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("host: node-2\n  namespace", "host: node-3\n  namespace"), "lab.yaml:12: field pods[1].host: no host named 'node-3'"),
        (("sidecar: true", "sidecar: true\n  sidcar: true"), "lab.yaml:11: field pods[0].sidcar: unknown field 'sidcar' (did you mean 'sidecar'?)"),
        (("port: 80,", 'port: "80",'), "lab.yaml:20: field services[0].ports[0].port: expected integer, got '80'"),
        (("- name: cart\n  host", "- name: web\n  host"), "lab.yaml:11: field pods[1].name: name 'web' is already used by a pod"),
        (("name: shop", "name: Shop"), "lab.yaml:1: field name: invalid lab name 'Shop'"),
        (("selector: {app: cart}", "selector: {}"), "lab.yaml:21: field services[0].selector: selector must name at least one label"),
    ],
)
def test_bad_spec_names_file_line_and_field(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    assert _error(GOOD.replace(old, new, 1)).startswith(expected)


def test_yaml_syntax_error_has_a_line() -> None:
    assert _error("name: x\npods: [\n").startswith("lab.yaml:")


def test_sidecar_needs_the_control_plane() -> None:
    text = GOOD.replace("name: shop\n", "name: shop\ncontrolPlane: {enabled: false}\n")
    assert _error(text).startswith("lab.yaml:11: field pods[0].sidecar: a sidecar needs the control plane")


def test_host_required_with_several_hosts() -> None:
    text = GOOD.replace("  host: node-1\n", "", 1)
    assert "pods[0]: host is required when the lab has more than one host" in _error(text)


def test_lab_up_with_a_bad_file_creates_nothing(tmp_path: Path) -> None:
    # A name of its own: other labs called `shop` (another test run, the example) may be up.
    name = unique_name("bad")
    bad = tmp_path / "lab.yaml"
    bad.write_text(GOOD.replace("name: shop\n", f"name: {name}\n", 1)
                   .replace("host: node-2\n  namespace", "host: nowhere\n  namespace"))  # fmt: skip
    env = {**os.environ, "WAYMESH_LAB_DIR": str(tmp_path / "labs")}
    r = subprocess.run([sys.executable, "-m", "waymesh", "lab", "up", "-f", str(bad)],
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert r.returncode == 2
    assert f"{bad}:12: field pods[1].host: no host named 'nowhere'" in r.stderr
    assert not (tmp_path / "labs").exists()
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [n for n in netns if n == f"wm.{name}" or n.startswith(f"wm.{name}.")]


def test_generated_mesh_config_loads_cleanly() -> None:
    spec = parse_lab(GOOD)
    pods = [
        PodState("web", "node-1", "wm.shop.web", "10.1.1.2", "default", "default", {"app": "web"}, True, "vp0", "wm.shop.node-1"),
        PodState("cart", "node-2", "wm.shop.cart", "10.1.2.2", "shop", "cart", {"app": "cart"}, False, "vp1", "wm.shop.node-2"),
    ]
    result = load_text(meshconfig.render(spec, pods, "shop"), "lab.yaml")
    assert result.errors == []
    by_kind = {(o.kind, o.name): o for o in result.objects}
    svc = by_kind[("Service", "cart")]
    assert svc.spec.clusterIP == auto_vip("shop", "cart")  # type: ignore[attr-defined]
    web = by_kind[("WorkloadEntry", "web")]
    assert web.spec.labels["security.istio.io/tlsMode"] == "istio"  # type: ignore[attr-defined]
    assert by_kind[("WorkloadEntry", "cart")].spec.serviceAccount == "cart"  # type: ignore[attr-defined]
    names = meshconfig.host_names(spec, "shop")
    assert names["cart"] == names["cart.shop.svc.cluster.local"] == auto_vip("shop", "cart")
    assert "cart" not in meshconfig.host_names(spec, "default")  # short names only in the same namespace


def test_capture_rules_text() -> None:
    script = restore_script(
        CaptureConfig(exclude_inbound_ports=(22,), exclude_outbound_ports=(5432,), exclude_outbound_cidrs=("10.9.0.0/16",))
    )
    lines = script.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert "-A PREROUTING -p tcp -j WAYMESH_INBOUND" in lines
    assert "-A OUTPUT -p tcp -j WAYMESH_OUTPUT" in lines
    assert "-A WAYMESH_INBOUND -p tcp --dport 22 -j RETURN" in lines
    assert "-A WAYMESH_OUTPUT -p tcp --dport 5432 -j RETURN" in lines
    assert "-A WAYMESH_OUTPUT -d 10.9.0.0/16 -j RETURN" in lines
    # The order is the semantics: exclusions and the proxy exemption come before the redirect.
    assert lines.index("-A WAYMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN") < lines.index(
        "-A WAYMESH_OUTPUT -j WAYMESH_REDIRECT"
    )
    assert "-A WAYMESH_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN" in lines
    marked = restore_script(CaptureConfig(proxy_mark=0x539)).splitlines()
    assert marked.index("-A WAYMESH_OUTPUT -m mark --mark 0x539 -j RETURN") < marked.index("-A WAYMESH_OUTPUT -j WAYMESH_REDIRECT")
    outbound_only = restore_script(CaptureConfig(inbound=False))
    assert "PREROUTING" not in outbound_only and "WAYMESH_IN_REDIRECT ! " not in outbound_only


def test_capture_flag_parsing() -> None:
    assert parse_ports("80, 443,") == (80, 443)
    assert parse_cidrs("10.0.0.0/8,192.168.1.7") == ("10.0.0.0/8", "192.168.1.7/32")
    with pytest.raises(ValueError, match="'http' is not a port"):
        parse_ports("80,http")
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IPv4 CIDR"):
        parse_cidrs("10.0.0.0/33")


def test_capture_dry_run_cli() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "waymesh", "capture", "install", "--dry-run", "--exclude-outbound-ports", "22"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "-A WAYMESH_OUTPUT -p tcp --dport 22 -j RETURN" in r.stdout


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="reviews")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_looks_like_tls() -> None:
    hello = _client_hello()
    assert looks_like_tls(hello)
    assert looks_like_tls(hello[:40])  # a capture cut mid-record
    assert not looks_like_tls(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert not looks_like_tls(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert not looks_like_tls(hello + b"GET / HTTP/1.1\r\n")  # plaintext after a record
    assert not looks_like_tls(b"")
