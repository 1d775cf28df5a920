"""``aienv system`` (this machine: hardware, AI workloads, processes, services,
containers) and ``aienv events`` (the node's event log, followed live).
Registered on the main app by ``aienv.cli.main``."""

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, err, human_size, out

if TYPE_CHECKING:
    from rich.table import Table

TOP_PROCESSES = 15  # the table shows the busiest; --json has them all
FOLLOW_EVERY = 1.0  # seconds between two polls of the event log
MAX_EVENTS = 1000  # what the node keeps

OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the inventory as JSON to FILE (atomically), not to stdout."
    ),
]
PrettyOpt = Annotated[bool, typer.Option("--pretty", help="Indent the JSON.")]


def write_json_atomically(path: Path, data: Any, pretty: bool) -> None:
    """Write next to ``path`` and rename, so a reader never sees half a file."""
    import os
    import tempfile

    text = json.dumps(data, indent=2 if pretty else None, default=str) + "\n"
    folder = path.resolve().parent
    if not folder.is_dir():
        raise CliError(f"cannot write {path}: the folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _table(*headers: str, title: str | None = None) -> "Table":
    from rich.table import Table

    return Table(*headers, title=title, box=None)


def _when(ts: float | None) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _hardware(data: dict[str, Any]) -> None:
    cpu, mem, plat = data["cpu"], data["memory"], data["platform"]
    out.print(f"[bold]{data.get('host', '')}[/] {plat.get('os', plat['system'])}, kernel "
              f"{plat.get('kernel', plat['release'])} {plat['machine']}, "
              f"up {data['uptime'] // 3600} h")  # fmt: skip
    usage = cpu.get("usage_percent")
    busy = f", {usage:g} % busy" if usage is not None else ""
    out.print(f"CPU     {cpu['model']}: {cpu['logical']} logical, {cpu['usable']} usable, "
              f"load {' '.join(map(str, cpu['load']))}{busy}")  # fmt: skip
    out.print(f"memory  {human_size(mem['total'])} total, {human_size(mem['available'])} "
              f"available, {human_size(mem['plannable'])} for environments")  # fmt: skip
    gpus = ", ".join(f"{g['index']}: {g['name']} ({human_size(g['memory'])})" for g in data["gpus"])
    out.print(f"GPU     {gpus or 'none'}")
    kvm = data["kvm"]
    out.print(f"KVM     {'usable' if kvm['usable'] else 'not usable: ' + kvm['reason']}")
    for disk in data.get("disks", []):
        out.print(f"disk    {disk['mount']}: {human_size(disk['free'])} free "
                  f"of {human_size(disk['total'])}")  # fmt: skip
    for iface in data.get("interfaces", []):
        state = "up" if iface["up"] else "down"
        out.print(f"net     {iface['name']} {state} {' '.join(iface['addresses'])}")
    table = _table("runtime", "available", "why not")
    for name, rt in data["runtimes"].items():
        table.add_row(name, "yes" if rt["available"] else "[red]no[/]", rt["reason"])
    out.print(table)


def _workloads(data: dict[str, Any]) -> None:
    found = data.get("ai_workloads", [])
    if not found:
        out.print("AI workloads: none recognised")
        return
    table = _table("kind", "id", "name", "why AI", title="AI workloads")
    for w in found:
        ident = str(w.get("pid") or w.get("id") or "")
        table.add_row(w["kind"], ident, w["name"] or "", "; ".join(w["reasons"]))
    out.print(table)


def _processes(processes: list[dict[str, Any]]) -> None:
    busiest = sorted(processes, key=lambda p: (-(p["cpu_percent"] or 0), -(p["rss"] or 0)))
    title = f"processes (the {TOP_PROCESSES} busiest of {len(processes)})"
    table = _table("pid", "user", "CPU %", "memory", "started", "ports", "command", title=title)
    for p in busiest[:TOP_PROCESSES]:
        ports = " ".join(f"{x['port']}/{x['protocol']}" for x in p.get("listening", []))
        command = " ".join(p["cmdline"] or []) or (p["name"] or "")
        cpu = "" if p["cpu_percent"] is None else f"{p['cpu_percent']:g}"
        rss = "" if p["rss"] is None else human_size(p["rss"])
        table.add_row(str(p["pid"]), p["user"] or "?", cpu, rss, _when(p["create_time"]), ports,
                      command[:80])  # fmt: skip
    out.print(table)


def _services(data: dict[str, Any]) -> None:
    services = data.get("services", [])
    if not services:
        out.print(f"services: none ({data.get('services_reason') or 'no systemd units'})")
        return
    running = [s for s in services if s["status"] == "active"]
    out.print(f"services: {len(running)} active of {len(services)} systemd units"
              + "".join(f"\n  [bold]{s['name']}[/] (AI: {'; '.join(s['ai_reasons'])})"
                        for s in services if s["ai"]))  # fmt: skip


def _containers(data: dict[str, Any]) -> None:
    containers = data.get("containers", [])
    if not containers:
        out.print(f"containers: none ({data.get('containers_reason') or 'the engine has none'})")
        return
    table = _table("id", "name", "image", "status", "ports", "mounts", title="containers")
    for c in containers:
        ports = " ".join(
            f"{p['host_port']}->{p['container_port']}/{p['protocol']}"
            if p["host_port"]
            else f"{p['container_port']}/{p['protocol']}"
            for p in c["ports"]
        )
        mounts = " ".join(f"{m['source']}:{m['destination']}" for m in c["mounts"])
        table.add_row(c["id"], c["name"], c["image"] or "", c["status"] or "", ports, mounts)
    out.print(table)


def system(
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    pretty: PrettyOpt = False,
) -> None:
    """This machine: hardware, runtimes, AI workloads (and why), processes, services,
    containers. With --output, the JSON goes to FILE only (and where, to stderr)."""
    data = Client().get("/system")
    if output is not None:
        write_json_atomically(output, data, pretty)
        err.line(f"wrote {output}")
        return
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2 if pretty else None, default=str) + "\n")
        return
    _hardware(data)
    if "processes" not in data:  # a node elsewhere, without admin credentials
        out.print("(processes, services and containers need the admin role)")
        return
    _workloads(data)
    _processes(data["processes"])
    _services(data)
    _containers(data)


def _event_line(event: dict[str, Any]) -> str:
    return f"{event['id']:>6} {_when(event['ts'])} {event['kind']:<9} {event['message']}"


def _show(events: list[dict[str, Any]], as_json: bool, follow: bool) -> None:
    if as_json and not follow:
        sys.stdout.write(json.dumps(events) + "\n")
        return
    for event in events:
        if as_json:  # following: one JSON object per line
            sys.stdout.write(json.dumps(event) + "\n")
        else:
            out.line(_event_line(event))
    sys.stdout.flush()


def events(
    as_json: JsonOpt = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they happen.")
    ] = False,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, max=MAX_EVENTS, help="How many recent events."),
    ] = 50,
) -> None:
    """The node's event log: clones, shares, peers, environments, this machine's changes."""
    client = Client()
    recent = client.get("/events", params={"limit": limit})["events"]
    _show(recent, as_json, follow)
    if not follow:
        return
    last = max((e["id"] for e in recent), default=0)
    try:
        while True:
            time.sleep(FOLLOW_EVERY)
            new = client.get("/events", params={"after": last, "limit": MAX_EVENTS})["events"]
            if new:
                _show(new, as_json, follow)
                last = new[-1]["id"]
    except KeyboardInterrupt:
        return
