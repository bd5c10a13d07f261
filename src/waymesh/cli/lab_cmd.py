"""`waymesh lab ...` (hosts and pods as network namespaces) and `waymesh capture ...` (iptables)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    lab = typer.Typer(help="A multi-host mesh on one machine: hosts and pods as network namespaces.",
                      no_args_is_help=True)  # fmt: skip
    app.add_typer(lab, name="lab")
    lab.command("up")(up)
    lab.command("down")(down)
    lab.command("status")(status)
    lab.command("exec", context_settings={"allow_interspersed_args": False})(exec_)
    lab.command("logs")(logs)
    lab.command("sniff")(sniff)
    lab.command("restart-node-proxy")(restart_node_proxy)
    lab.command("restart-control-plane")(restart_control_plane)

    cap = typer.Typer(help="iptables rules that send a pod's TCP traffic through its proxy (15001/15006).",
                      no_args_is_help=True)  # fmt: skip
    app.add_typer(cap, name="capture")
    cap.command("install")(capture_install)
    cap.command("remove")(capture_remove)
    cap.command("show")(capture_show)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


# --- lab -----------------------------------------------------------------------------------------


def up(
    file: Path = typer.Option(..., "-f", "--file", help="LAB.yaml (see docs/lab.md)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once the lab is ready; it keeps running."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for each part (control plane, sidecar, app port)."),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Create the lab and run it in the foreground (Ctrl-C tears it down), or in the background (-d)."""
    from waymesh.lab.spec import LabSpecError, load_lab

    try:
        spec = load_lab(file)
    except LabSpecError as e:
        _fail(f"invalid lab file:\n{e}", 2)
        return
    if detach:
        from waymesh.lab.control import start_detached

        try:
            st = start_detached(file, spec.name, timeout)
        except RuntimeError as e:
            _fail(str(e))
            return
        _print_state(st)
        return

    import signal

    from waymesh.cli.runtime import configure_logging
    from waymesh.lab.runner import LabError, LabRunner

    configure_logging(log_level)
    runner = LabRunner(spec, file, ready_timeout=timeout)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    try:
        st = runner.up()
    except LabError as e:
        _fail(f"lab {spec.name} failed to start: {e}")
        return
    _print_state(st)
    typer.echo("lab is up; Ctrl-C or `waymesh lab down` tears it down", err=True)
    try:
        runner.supervise()
    finally:
        runner.teardown()
        typer.echo(f"lab {spec.name} is down", err=True)


def down(
    name: str | None = typer.Argument(None, help="Lab name (default: the only lab)."),
    all_labs: bool = typer.Option(False, "--all", help="Every lab on this machine."),
) -> None:
    """Stop a lab and remove its namespaces, links and state; works after a crash too."""
    from waymesh.lab.runner import LabError, running_lab
    from waymesh.lab.runner import down as lab_down
    from waymesh.lab.state import known_labs

    if all_labs:
        names = known_labs()
    else:
        try:
            names = [running_lab(name)] if name is None else [name]
        except LabError as e:
            _fail(str(e))
            return
    for n in names:
        removed = lab_down(n)
        typer.echo(f"lab {n}: removed {len(removed)} item(s)" if removed else f"lab {n}: nothing to remove")


def status(
    name: str | None = typer.Argument(None, help="Lab name (default: every lab)."),
    as_json: bool = typer.Option(False, "--json", help="The full state as JSON."),
) -> None:
    """Labs, their pods (address, host, sidecar), processes and addresses."""
    import json
    from dataclasses import asdict

    from waymesh.lab.runner import status as lab_status
    from waymesh.lab.state import known_labs

    names = [name] if name else known_labs()
    states = [s for s in (lab_status(n) for n in names) if s is not None]
    if name and not states:
        _fail(f"no lab named {name}")
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in states], indent=2))
        return
    if not states and not names:
        typer.echo("no labs")
    for st in states:
        _print_state(st)
    from waymesh.lab.net import lab_netns

    for n in names:
        if not any(st.name == n for st in states):
            left = lab_netns(n)
            if left:
                typer.echo(f"lab {n}: no state file, {len(left)} namespace(s) left behind; `waymesh lab down {n}` removes them")


def _print_state(st: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from waymesh.lab.state import LabState

    assert isinstance(st, LabState)
    console = Console()
    user = f"uid {st.proxy_uid}" if st.proxy_uid is not None else "uid 0"
    console.print(
        f"[bold]lab {st.name}[/bold]: {st.phase}{' - ' + st.message if st.message else ''}\n"
        f"  network {st.network}, control plane xDS {st.xds_address or '-'}"
        f"{', CA ' + st.ca_address if st.ca_address else ''}, debug {st.debug_address or '-'}\n"
        f"  sidecar agents run as {user} gid {st.proxy_gid}; lab file {st.spec_file}"
    )
    table = Table("pod", "namespace", "host", "address", "mode", "processes")
    for pod in st.pods:
        procs = [p for p in st.procs if p.name.startswith(pod.name + "/")]
        shown = ", ".join(
            f"{p.name.split('/')[1]} {p.pid}" + ("" if p.exit_code is None else f" (exited {p.exit_code})") for p in procs
        )
        mode = pod.mode or ("sidecar" if pod.sidecar else "none")
        if pod.waypoint:
            mode += f" ({pod.waypoint})"
        table.add_row(pod.name, pod.namespace, pod.host, pod.address, mode, shown or "-")
    console.print(table)
    for h in st.hosts:
        nps = [p for p in st.procs if p.name == f"{h.name}/node-proxy"]
        if not h.node_proxy:
            what = "no node proxy"
        else:
            what = "node proxy " + ", ".join(
                f"pid {p.pid} " + ("running" if p.exit_code is None else f"exited {p.exit_code}") for p in nps
            ) + f"; metrics http://{h.address}:15020/metrics; log {nps[-1].log if nps else '-'}"
        console.print(f"  host {h.name} {h.address}: {what}")
    for p in st.procs:
        if "/" not in p.name or p.name.endswith("/host"):
            state = "running" if p.exit_code is None else f"exited {p.exit_code}"
            console.print(f"  {p.name}: pid {p.pid} {state}, log {p.log}")
    if st.services:
        console.print("  services: " + ", ".join(f"{k}={v}" for k, v in st.services.items()))


def exec_(
    pod: str = typer.Argument(..., help="Pod (or host) name."),
    command: list[str] = typer.Argument(..., help="Command and its arguments (after --)."),
    lab_name: str | None = typer.Option(None, "--lab", help="Lab name (default: the only lab)."),
    user: int | None = typer.Option(None, "--uid", help="Run as this uid (e.g. 1337 to act as the proxy)."),
    group: int | None = typer.Option(None, "--gid", help="Run with this gid."),
) -> None:
    """Run a command in a pod's network namespace: `waymesh lab exec productpage -- curl reviews:9080`."""
    import os

    from waymesh.lab import procs
    from waymesh.lab.runner import LabError, running_lab
    from waymesh.lab.state import node_netns

    try:
        lab = running_lab(lab_name)
    except LabError as e:
        _fail(str(e))
        return
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _fail("no command given (waymesh lab exec POD -- CMD ...)")
    ns = node_netns(lab, pod)
    if not Path("/run/netns", ns).exists():
        _fail(f"lab {lab} has no pod or host {pod!r}")
    argv = procs.netns_argv(ns, procs.resolve_command(command), user, group)
    os.execvp(argv[0], argv)


def logs(
    process: str = typer.Argument(
        ..., help="`control-plane`, `POD` (its app), `POD/sidecar`, `POD/waypoint`, `HOST` or `HOST/node-proxy`."
    ),
    lab_name: str | None = typer.Option(None, "--lab", help="Lab name (default: the only lab)."),
    lines: int = typer.Option(50, "-n", help="Last N lines."),
) -> None:
    """Show the end of a lab process's log."""
    from waymesh.lab import procs
    from waymesh.lab.runner import LabError, running_lab
    from waymesh.lab.runner import status as lab_status

    try:
        st = lab_status(running_lab(lab_name))
    except LabError as e:
        _fail(str(e))
        return
    assert st is not None
    for want in (process, f"{process}/app", f"{process}/host", f"{process}/node-proxy"):
        for p in reversed(st.procs):  # the newest of a name (a restarted node proxy has two)
            if p.name == want:
                typer.echo(procs.tail(p.log, lines))
                return
    _fail(f"no process {process!r} (processes: {', '.join(p.name for p in st.procs)})")


def sniff(
    pod: str = typer.Argument(..., help="Pod whose wire (the host side of its veth) to watch."),
    seconds: float = typer.Option(5.0, "--seconds", "-s", help="How long to capture."),
    lab_name: str | None = typer.Option(None, "--lab", help="Lab name (default: the only lab)."),
) -> None:
    """Watch a pod's wire for a few seconds; print each TCP connection and whether it is TLS."""
    import time

    from waymesh.lab.runner import LabError, running_lab
    from waymesh.lab.sniff import Sniffer, describe_streams
    from waymesh.lab.state import LabState

    try:
        st = LabState.load(running_lab(lab_name))
    except LabError as e:
        _fail(str(e))
        return
    assert st is not None
    try:
        p = st.pod(pod)
    except KeyError as e:
        _fail(str(e.args[0]))
        return
    typer.echo(f"watching {pod} ({p.address}) for {seconds:g} s...", err=True)
    with Sniffer(p.host_netns, p.veth) as cap:
        try:
            time.sleep(seconds)
        except KeyboardInterrupt:
            pass
    lines = describe_streams(cap.streams())
    typer.echo("\n".join(lines) if lines else "no TCP payload seen")


def restart_node_proxy(
    host: str = typer.Argument(..., help="Host whose node proxy to restart."),
    lab_name: str | None = typer.Option(None, "--lab", help="Lab name (default: the only lab)."),
    timeout: float = typer.Option(90.0, help="Seconds to wait for the new node proxy."),
) -> None:
    """Replace a host's node proxy without failing new connections: a second one starts and binds
    next to it (SO_REUSEPORT); once it is ready the old one gets SIGTERM and drains."""
    from waymesh.lab.control import request
    from waymesh.lab.runner import LabError, running_lab

    try:
        lab = running_lab(lab_name)
        # The supervisor gives up waiting after `timeout` (the old one keeps serving then).
        answer = request(lab, "restart-node-proxy", timeout=timeout + 15, host=host, wait=timeout)
    except (LabError, RuntimeError) as e:
        _fail(str(e))
        return
    typer.echo(f"node proxy of {host}: pid {answer['new_pid']} is ready, pid {answer['old_pid']} is draining "
               f"(log {answer['new_log']})")  # fmt: skip


def restart_control_plane(
    lab_name: str | None = typer.Option(None, "--lab", help="Lab name (default: the only lab)."),
    timeout: float = typer.Option(90.0, help="Seconds to wait for the new control plane."),
) -> None:
    """Start the lab's control plane again (after a crash, or to replace it) with the same flags
    and CA; proxies and node proxies keep their last config meanwhile and resync on reconnect."""
    from waymesh.lab.control import request
    from waymesh.lab.runner import LabError, running_lab

    try:
        lab = running_lab(lab_name)
        answer = request(lab, "restart-control-plane", timeout=timeout)
    except (LabError, RuntimeError) as e:
        _fail(str(e))
        return
    typer.echo(f"control plane: pid {answer['new_pid']} serves (after {answer['ready_after_s']} s); "
               f"pid {answer['old_pid']} exited with {answer['old_exit_code']}")  # fmt: skip


# --- capture -------------------------------------------------------------------------------------


def capture_install(
    netns: str | None = typer.Option(None, "--netns", help="Network namespace (default: the current one)."),
    uid: int = typer.Option(1337, "--uid", help="The proxy's uid: its traffic is not captured (-1: none, e.g. a sidecarless pod)."),
    gid: int = typer.Option(1337, "--gid", help="The proxy's gid: its traffic is not captured either (-1: uid only)."),
    outbound_port: int = typer.Option(15001, "--outbound-port", help="Where outbound TCP is redirected."),
    inbound_port: int = typer.Option(15006, "--inbound-port", help="Where inbound TCP is redirected."),
    inbound: bool = typer.Option(True, "--inbound/--no-inbound", help="Capture inbound traffic too."),
    exclude_inbound_ports: str = typer.Option("", "--exclude-inbound-ports", help="Comma-separated ports."),
    exclude_outbound_ports: str = typer.Option("", "--exclude-outbound-ports", help="Comma-separated ports."),
    exclude_outbound_cidrs: str = typer.Option("", "--exclude-outbound-cidrs", help="Comma-separated IPv4 CIDRs."),
    proxy_mark: str | None = typer.Option(
        None, "--proxy-mark", help="Also exempt packets with this SO_MARK (e.g. 0x539, a node proxy's sockets)."
    ),
    preserve_source: bool = typer.Option(
        False, "--preserve-source",
        help="The proxy connects to the app from the client's address (IP_TRANSPARENT, needs --proxy-mark): "
        "mangle CONNMARK rules and `ip rule fwmark 0x111/0xfff lookup 100` (local 0.0.0.0/0 dev lo) bring the replies back to it.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the iptables-restore input; change nothing."),
) -> None:
    """Install Istio-style capture: inbound TCP -> 15006, outbound TCP -> 15001, the proxy exempt."""
    from waymesh.capture import apply
    from waymesh.capture.rules import (
        CaptureConfig,
        mangle_script,
        parse_cidrs,
        parse_ports,
        restore_script,
        route_commands,
    )

    try:
        cfg = CaptureConfig(
            proxy_uid=None if uid < 0 else uid,
            proxy_gid=None if gid < 0 else gid,
            outbound_port=outbound_port,
            inbound_port=inbound_port,
            inbound=inbound,
            exclude_inbound_ports=parse_ports(exclude_inbound_ports),
            exclude_outbound_ports=parse_ports(exclude_outbound_ports),
            exclude_outbound_cidrs=parse_cidrs(exclude_outbound_cidrs),
            proxy_mark=int(proxy_mark, 0) if proxy_mark else None,
            preserve_source=preserve_source,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if dry_run:
        typer.echo(restore_script(cfg) + mangle_script(cfg), nl=False)
        if cfg.preserve_source:
            typer.echo("".join(f"# ip {' '.join(c)}\n" for c in route_commands()), nl=False)
        return
    try:
        apply.install(cfg, netns)
    except apply.CaptureError as e:
        _fail(str(e))
    typer.echo(f"capture installed{' in ' + netns if netns else ''}")


def capture_remove(
    netns: str | None = typer.Option(None, "--netns", help="Network namespace (default: the current one)."),
) -> None:
    """Remove the capture rules (the WAYMESH_* chains, the jumps to them, the source route)."""
    from waymesh.capture import apply

    try:
        removed = apply.remove(netns)
    except apply.CaptureError as e:
        _fail(str(e))
        return
    typer.echo("capture removed" if removed else "no capture rules were installed")


def capture_show(
    netns: str | None = typer.Option(None, "--netns", help="Network namespace (default: the current one)."),
) -> None:
    """Print the capture rules in force (iptables-save syntax)."""
    from waymesh.capture import apply

    try:
        typer.echo(apply.show(netns) or "no capture rules installed", nl=False)
    except apply.CaptureError as e:
        _fail(str(e))
