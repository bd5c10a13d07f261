"""routechange: bounded load (wrk) through the gateway while a route's backend is switched
back and forth 20 times; every non-200 counted.

Two echo Services (`blue`, `green`) behind one HTTPRoute on path /; every `--interval` seconds
the route is re-applied pointing at the other one. wrk runs with a Lua script that counts
non-200 answers (socket errors and timeouts are counted too).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from typing import Any

import httpx
from common import backend_address, gateway_yaml, route_yaml, run_benchmark, service_yaml

from waymesh.tools.harness import free_port, wait_until

WRK_SCRIPT = """\
local non200 = 0
local codes = {}
response = function(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "non200": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, non200, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def add_arguments(parser: Any) -> None:
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between switches")
    parser.add_argument("--connections", type=int, default=4)


def wrk(url: str, seconds: float, connections: int, extra: list[str] | None = None) -> dict[str, Any]:
    """Run wrk for `seconds` and return its summary (requests, non-200, errors, p50/p99 µs)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not found: run scripts/install.sh --test (it installs wrk and h2load)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "5s",
         "-s", script.name, *(extra or []), url],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(line.removeprefix("WRKJSON "))
    data["seconds"] = max(1, round(seconds))
    data["requests_per_second"] = round(data["requests"] / data["seconds"], 1)
    return data


def run(target: Any, args: Any) -> dict[str, Any]:
    echoes = [target.mesh.spawn_echo(c, address=backend_address(), extra=["--quiet"]) for c in ("blue", "green")]
    for echo in echoes:
        target.mesh.wait_echo(echo)
    port = free_port()
    target.start()
    target.apply("gateway", gateway_yaml(port))
    for echo in echoes:
        target.apply(f"svc-{echo.name}", service_yaml(echo.name.split("-")[1], "default", 80, [echo.ports["http"]]))
    target.apply("route", route_yaml("switch", "default", path="/", backend="blue"))
    target.start_gateway()
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, timeout=60,
               what="route answering 200")
    seconds = args.switches * args.interval + 2
    import threading

    result: dict[str, Any] = {}
    load = threading.Thread(target=lambda: result.update(wrk(f"http://127.0.0.1:{port}/", seconds, args.connections)))
    load.start()
    time.sleep(1)
    for n in range(args.switches):
        target.apply("route", route_yaml("switch", "default", path="/", backend=("green", "blue")[n % 2]))
        time.sleep(args.interval)
    load.join()
    errors = sum(result.get(k, 0) for k in ("connect", "read", "write", "timeout"))
    return {"switches": args.switches, "requests": result.get("requests"), "non200": result.get("non200"),
            "socket_errors": errors, "requests_per_second": result.get("requests_per_second"),
            "p99_us": result.get("p99_us")}


if __name__ == "__main__":
    run_benchmark("routechange", __doc__, add_arguments, run, ["non200", "requests_per_second"])
