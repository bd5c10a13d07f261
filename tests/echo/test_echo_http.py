from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import httpx
import pytest

from waymesh.echo import EchoConfig, EchoRequest, Server, serve_echo


async def test_http11_keepalive_reuses_one_connection(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        answers = [(await client.get(f"/k?i={i}")).json() for i in range(3)]
    assert {a["peer"] for a in answers} == {answers[0]["peer"]}  # same client port: keep-alive
    first = answers[0]
    assert first["name"] == "echo-a" and first["namespace"] == "ns1"
    assert first["method"] == "GET" and first["path"] == "/k?i=0"
    assert first["protocol"] == "HTTP/1.1" and first["tls"] is None
    assert first["host"] == f"127.0.0.1:{echo.port}"
    assert first["headers"]["host"] == [f"127.0.0.1:{echo.port}"]


async def test_headers_are_lowercase_lists(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        r = await client.get("/", headers=[("X-Multi", "a"), ("x-multi", "b"), ("X-One", "1")])
    assert r.json()["headers"]["x-multi"] == ["a", "b"]
    assert r.json()["headers"]["x-one"] == ["1"]


async def test_h2c_prior_knowledge(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url, http1=False, http2=True) as client:
        r = await client.post("/h2?x=1", content=b"z" * 100_000, headers={"x-test": "yes"})
    assert r.http_version == "HTTP/2"
    body = r.json()
    assert body["protocol"] == "HTTP/2"
    assert body["path"] == "/h2?x=1"
    assert body["host"] == f"127.0.0.1:{echo.port}"
    assert body["body_size"] == 100_000
    assert body["headers"]["x-test"] == ["yes"]
    assert not any(name.startswith(":") for name in body["headers"])


async def test_http11_body_is_counted(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        r = await client.put("/upload", content=b"x" * 300_000)
    assert r.json()["body_size"] == 300_000 and r.json()["method"] == "PUT"


async def test_h2c_can_be_turned_off() -> None:
    server = await serve_echo(EchoConfig(address="127.0.0.1", http2=False, log=False))
    try:
        async with httpx.AsyncClient(base_url=server.url, http1=False, http2=True) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get("/")
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("http2", "protocol", "alpn"), [(True, "HTTP/2", "h2"), (False, "HTTP/1.1", "http/1.1")]
)
async def test_tls_with_alpn(self_signed: tuple[Path, Path], http2: bool, protocol: str, alpn: str) -> None:
    cert, key = self_signed
    server = await serve_echo(
        EchoConfig(name="tls", address="127.0.0.1", tls_cert=str(cert), tls_key=str(key), log=False)
    )
    try:
        verify = ssl.create_default_context(cafile=str(cert))
        verify.check_hostname = False  # we connect by IP but send SNI echo.test
        async with httpx.AsyncClient(base_url=server.url, verify=verify, http2=http2) as client:
            r = await client.get("/secure", extensions={"sni_hostname": "echo.test"})
    finally:
        await server.close()
    body = r.json()
    assert body["protocol"] == protocol
    assert body["tls"] == {"version": "TLSv1.3", "sni": "echo.test", "alpn": alpn}


async def test_tls_client_certificate_required_and_reported(tmp_path: Path) -> None:
    from waymesh.ca.selfsigned import issue_self_signed

    server_cert = issue_self_signed(["echo.test"])
    client_cert = issue_self_signed(["client.test"], ca_name="client CA")
    paths = {}
    for name, data in (("cert", server_cert.cert_pem), ("key", server_cert.key_pem),
                       ("ca", server_cert.ca_pem), ("client_ca", client_cert.ca_pem),
                       ("client", client_cert.cert_pem), ("client_key", client_cert.key_pem)):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    server = await serve_echo(EchoConfig(
        name="mtls", address="127.0.0.1", tls_cert=str(paths["cert"]), tls_key=str(paths["key"]),
        tls_client_ca=str(paths["client_ca"]), log=False,
    ))
    try:
        verify = ssl.create_default_context(cafile=str(paths["ca"]))
        verify.check_hostname = False
        anonymous = ssl.create_default_context(cafile=str(paths["ca"]))
        anonymous.check_hostname = False
        verify.load_cert_chain(str(paths["client"]), str(paths["client_key"]))
        async with httpx.AsyncClient(base_url=server.url, verify=verify, http2=False) as client:
            body = (await client.get("/", extensions={"sni_hostname": "echo.test"})).json()
        async with httpx.AsyncClient(base_url=server.url, verify=anonymous, http2=False) as client:
            with pytest.raises(httpx.TransportError):
                await client.get("/", extensions={"sni_hostname": "echo.test"})
    finally:
        await server.close()
    assert body["tls"]["client_san"] == "DNS:client.test"


async def test_delay_uses_go_durations(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        start = time.monotonic()
        r = await client.get("/slow?delay=300ms")
        elapsed = time.monotonic() - start
        bad = await client.get("/slow?delay=soon")
    assert r.status_code == 200
    assert 0.3 <= elapsed < 1.0
    assert bad.status_code == 400 and "invalid duration" in bad.json()["error"]


async def test_set_header(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        r = await client.get("/", headers={"X-Echo-Set-Header": "X-Foo: bar,Set-Cookie:a=1"})
    assert r.headers["x-foo"] == "bar"
    assert r.headers["set-cookie"] == "a=1"


async def test_set_header_over_h2(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url, http1=False, http2=True) as client:
        r = await client.get("/", headers={"X-Echo-Set-Header": "X-Upper:Yes"})
    assert r.headers["x-upper"] == "Yes"


async def test_status_and_fail_first(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        assert (await client.get("/?status=418")).status_code == 418
        codes = [(await client.get("/retry?fail=2&key=one")).status_code for _ in range(4)]
        other = (await client.get("/retry?fail=1&key=two")).status_code
        assert (await client.get("/?status=42")).status_code == 400
    assert codes == [503, 503, 200, 200]
    assert other == 503  # counters are per key


async def test_size_pads_body(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url, http1=False, http2=True) as client:
        r = await client.get("/?size=200000")
    assert len(r.content) == 200_000
    assert r.json()["path"] == "/?size=200000"  # padding keeps it JSON


async def test_head_has_no_body(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        r = await client.head("/")
        again = await client.get("/after-head")
    assert r.status_code == 200 and r.content == b""
    assert again.json()["path"] == "/after-head"


async def test_binds_given_address() -> None:
    server = await serve_echo(EchoConfig(name="b", address="127.0.0.2", log=False))
    try:
        assert server.address == "127.0.0.2"
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.2:{server.port}/")
            assert r.json()["name"] == "b"
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{server.port}/")
    finally:
        await server.close()


async def test_concurrent_http11_connections(echo: Server) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=echo.url, limits=limits, timeout=10) as client:
        start = time.monotonic()
        rs = await asyncio.gather(*(client.get(f"/c?delay=200ms&i={i}") for i in range(200)))
        elapsed = time.monotonic() - start
    assert sorted(r.json()["path"] for r in rs) == sorted(f"/c?delay=200ms&i={i}" for i in range(200))
    assert len({r.json()["peer"] for r in rs}) > 100  # really many connections at once
    assert elapsed < 15.0  # in parallel, not 200 x 200 ms (= 40 s); generous for a loaded CI machine


async def test_concurrent_h2_streams_on_one_connection(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url, http1=False, http2=True, timeout=10) as client:
        start = time.monotonic()
        rs = await asyncio.gather(*(client.get(f"/s?delay=300ms&i={i}") for i in range(50)))
        elapsed = time.monotonic() - start
    assert all(r.status_code == 200 for r in rs)
    assert len({r.json()["peer"] for r in rs}) == 1
    assert elapsed < 1.5


async def test_logs_one_line_per_request(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[EchoRequest] = []
    server = await serve_echo(EchoConfig(address="127.0.0.1", on_request=seen.append))
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.get("/mirror?x=1", headers={"x-mark": "m1"})
    finally:
        await server.close()
    lines = [line for line in capsys.readouterr().out.splitlines() if "/mirror" in line]
    assert len(lines) == 1
    assert lines[0].startswith("GET /mirror?x=1 {")
    assert '"x-mark":["m1"]' in lines[0]
    assert [r.path for r in seen] == ["/mirror?x=1"]


async def test_close_drops_open_connections(echo: Server) -> None:
    async with httpx.AsyncClient(base_url=echo.url) as client:
        await client.get("/")
        pending = asyncio.create_task(client.get("/?delay=10s"))
        await asyncio.sleep(0.1)
        start = time.monotonic()
        await echo.close()
        assert time.monotonic() - start < 1.0
        with pytest.raises(httpx.HTTPError):
            await pending
