"""``aienv`` commands. Every command but ``serve`` talks to the node's API."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from aienv.cli import runtimes, system
from aienv.cli.auth import auth_app
from aienv.cli.capture import capture
from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, endpoints_text, err, human_size, out
from aienv.errors import AienvError

app = typer.Typer(
    help="Share, discover, clone and launch AI development environments on your LAN.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
peer_app = typer.Typer(
    help="Manually added peers, for networks that block multicast.", no_args_is_help=True
)
app.add_typer(peer_app, name="peer")
app.add_typer(runtimes.snapshot_app, name="snapshot")
app.add_typer(auth_app, name="auth")

TERMINAL_CLONE = {"running", "installed", "failed", "cancelled"}


# -- the node ------------------------------------------------------------------


@app.command()
def serve(
    home: Annotated[
        Path | None, typer.Option(help="Home folder (default: platform data dir; env AIENV_HOME).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Node name (default: hostname).")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP listen address (default 0.0.0.0).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 37778).")] = None,
    discovery_port: Annotated[
        int | None, typer.Option(help="UDP announcement port (default 37777).")
    ] = None,
    interface: Annotated[
        list[str] | None,
        typer.Option(
            "--interface", "-i", help="Interface name or IPv4 address to announce on (repeatable)."
        ),
    ] = None,
    announce_interval: Annotated[
        float | None, typer.Option(help="Seconds between announcements (default 10).")
    ] = None,
    no_dnssd: Annotated[
        bool, typer.Option("--no-dnssd", help="Do not use DNS-SD (zeroconf).")
    ] = False,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Serve HTTPS with a self-signed certificate that peers pin (env AIENV_TLS).",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the node: discovery, the HTTP API and the environments it launches."""
    from pydantic import ValidationError

    from aienv.config import NodeSettings
    from aienv.node import run_node

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides: dict[str, Any] = {
        "home": home,
        "name": name,
        "http_host": host,
        "http_port": port,
        "discovery_port": discovery_port,
        "interfaces": interface or None,
        "announce_interval": announce_interval,
    }
    if no_dnssd:
        overrides["dnssd"] = False
    if tls:
        overrides["tls"] = True
    try:
        settings = NodeSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid setting: {problems}") from exc
    run_node(settings)


@app.command("node")
def node_info(as_json: JsonOpt = False) -> None:
    """Show this node: id, name, discovery counters, runtimes."""
    data = Client().get("/node")
    if as_json:
        emit_json(data)
        return
    out.print(f"[bold]{data['name']}[/] id {data['id']} (aienv {data['version']})")
    if data.get("tls"):
        out.print(f"TLS certificate sha256 {data['tls']['fingerprint']}")
    disc = data["discovery"]
    ifaces = ", ".join(f"{i['name']} {i['address']}" for i in disc["interfaces"]) or "none"
    out.print(f"announcing on {ifaces} every {disc['interval']:g} s; counters {disc['counters']}")


# -- workspaces ------------------------------------------------------------------


@app.command()
def create(
    name: str,
    source: Annotated[
        Path | None, typer.Option("--from", help="A folder holding workspace.yaml.")
    ] = None,
    template: Annotated[
        str | None, typer.Option(help="A built-in template (default hello-web).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a workspace from a folder (copied into the node) or a template."""
    body: dict[str, Any] = {"name": name}
    if source is not None:
        if not source.is_dir():
            raise CliError(f"{source} is not a folder")
        body["from"] = str(source.resolve())
    if template is not None:
        body["template"] = template
    ws = Client().post("/workspaces", body)
    if as_json:
        emit_json(ws)
    else:
        out.print(f"created workspace [bold]{ws['name']}[/] ({ws['version']}) at {ws['path']}")


@app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """List this node's workspaces."""
    items = Client().get("/workspaces")["workspaces"]
    if as_json:
        emit_json(items)
        return
    table = Table("name", "version", "runtimes", "shared", "size", "origin", box=None)
    for ws in items:
        origin = ws.get("origin") or {}
        where = (
            f"{origin.get('peer_name')}/{origin.get('workspace')}"
            if origin.get("kind") == "clone"
            else origin.get("kind", "")
        )
        size = human_size(ws["archive"]["size"]) if ws["archive"] else "-"
        table.add_row(
            ws["name"],
            ws["version"],
            ",".join(ws["runtimes"]),
            "yes" if ws["shared"] else "no",
            size,
            where,
        )
    out.print(table if items else "no workspaces yet: `aienv create NAME --from DIR`")


@app.command()
def show(name: str, as_json: JsonOpt = False) -> None:
    """Show one workspace."""
    ws = Client().get(f"/workspaces/{name}")
    if as_json:
        emit_json(ws)
        return
    out.print(f"[bold]{ws['name']}[/] {ws['version']} — {ws['description']}")
    out.print(f"path: {ws.get('path')}   shared: {'yes' if ws['shared'] else 'no'}")
    if ws["archive"]:
        a = ws["archive"]
        out.print(f"archive: sha256 {a['digest']}  {human_size(a['size'])} ({a['files']} files)")
    for env in ws["environments"]:
        eps = ", ".join(f"{e['name']}:{e['port']}" for e in env["endpoints"]) or "no endpoints"
        out.print(f"environment {env['name']} ({env['runtime']}): {eps}")


@app.command()
def delete(
    name: str, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False
) -> None:
    """Delete a workspace and its files."""
    if (
        not yes
        and sys.stdin.isatty()
        and not typer.confirm(f"delete workspace {name} and its files?")
    ):
        raise typer.Exit(1)
    Client().delete(f"/workspaces/{name}")
    out.print(f"deleted {name}")


@app.command()
def share(name: str) -> None:
    """Share a workspace: every node on the LAN sees it at once.

    The first share (and one after the files changed) packs the workspace, with a
    progress bar; Ctrl-C cancels the packing and shares nothing.
    """
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["ws"] = Client(timeout=None).post(f"/workspaces/{name}/share")
        except CliError as exc:
            result["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    try:
        _follow_pack(name, worker)
    except KeyboardInterrupt:
        for pack in _active_packs(Client(), name):
            Client().post(f"/transfers/{pack['id']}/cancel")
        worker.join(10)
        raise CliError(
            "sharing cancelled: the packing stopped and nothing was shared", 130
        ) from None
    if "error" in result:
        raise result["error"]
    a = result["ws"]["archive"]
    for path in result["ws"].get("added", []):
        out.print(f"added {path} to the workspace (from this machine)")
    out.print(f"sharing [bold]{name}[/] ({human_size(a['size'])}, sha256 {a['digest'][:16]}…)")


def _active_packs(client: Client, name: str) -> list[dict[str, Any]]:
    return [
        t
        for t in client.get("/transfers")["transfers"]
        if t["direction"] == "pack" and t["workspace"] == name and t["state"] == "active"
    ]


def _byte_progress(*, transient: bool, disable: bool = False) -> Progress:
    """The progress bar of byte transfers (packing, cloning), drawn on stderr."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=disable,
        transient=transient,
    )


def _follow_pack(name: str, worker: threading.Thread) -> None:
    client = Client()
    with _byte_progress(transient=True) as progress:
        task = None
        while worker.is_alive():
            worker.join(0.2)
            try:
                packs = _active_packs(client, name)
            except CliError:
                continue
            if packs:
                if task is None:
                    task = progress.add_task(f"packing {name}", total=packs[0]["total"])
                progress.update(task, completed=packs[0]["bytes"], total=packs[0]["total"])


@app.command()
def unshare(name: str) -> None:
    """Stop sharing a workspace."""
    Client().post(f"/workspaces/{name}/unshare")
    out.print(f"{name} is no longer shared")


# -- peers ---------------------------------------------------------------------


@app.command()
def peers(as_json: JsonOpt = False) -> None:
    """Nodes seen on the network and what each shares."""
    data = Client().get("/peers")
    if as_json:
        emit_json(data["peers"])
        return
    if not data["peers"]:
        out.print("no peers seen yet")
    for p in data["peers"]:
        shares = ", ".join(
            f"{w['name']} ({w['version']}, {human_size(w['size'])})" for w in p["workspaces"]
        )
        out.print(
            f"[bold]{p['name']}[/] {p['id'][:12]} {p['url']} "
            f"via {','.join(p['sources'])}: {shares or 'shares nothing'}"
        )


@peer_app.command("add")
def peer_add(address: str) -> None:
    """Add a peer by HOST[:PORT] (polled over HTTP)."""
    res = Client().post("/peers", {"address": address})
    out.print(
        f"added {res['address']}"
        + ("" if res["reached"] else " (not reachable yet; will keep trying)")
    )


@peer_app.command("remove")
def peer_remove(address: str) -> None:
    """Remove a manually added peer."""
    Client().delete(f"/peers/{address}")
    out.print(f"removed {address}")


@peer_app.command("list")
def peer_list(as_json: JsonOpt = False) -> None:
    """List manually added peers."""
    manual = Client().get("/peers")["manual"]
    if as_json:
        emit_json(manual)
    else:
        out.print("\n".join(manual) or "no manual peers")


# -- clone and environments --------------------------------------------------------


@app.command()
def clone(
    source: Annotated[
        str,
        typer.Argument(
            help="PEER/WORKSPACE; PEER is a node name, a node-id prefix or HOST[:PORT]."
        ),
    ],
    as_name: Annotated[
        str | None, typer.Option("--as", help="Local name (default: the workspace's).")
    ] = None,
    no_launch: Annotated[
        bool, typer.Option("--no-launch", help="Install only; do not launch.")
    ] = False,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Start the clone and return; follow it with `aienv clones`."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Launch even when requirements are not met here.")
    ] = False,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the peer's password (its node or workspace password) from stdin.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download, verify, install, plan and launch a workspace shared by a peer.

    The download uses every peer that holds the same archive, resumes after
    interruptions (even a restart of this node) and is checked piece by piece.
    """
    client = Client()
    body: dict[str, Any] = {"source": source, "launch": not no_launch, "force": force}
    if as_name:
        body["as"] = as_name
    if password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\r\n")
    job = client.post("/clones", body)
    if detach:
        if as_json:
            emit_json(job)
        else:
            out.print(f"clone [bold]{job['id']}[/] started: {source} → {job['target']}")
        return
    try:
        job = _follow_clone(client, job, quiet=as_json)
    except KeyboardInterrupt:
        try:
            client.delete(f"/clones/{job['id']}")
            message = "clone cancelled"
        except CliError as exc:
            message = f"interrupted; the clone goes on in the node ({exc.message})"
        raise CliError(message, 130) from None
    if as_json:
        emit_json(job)
    if job["state"] in ("failed", "cancelled"):
        raise CliError(f"clone {job['state']}: {job['error']}")
    if not as_json:
        out.print(f"[green]{job['target']}[/] {job['state']} (sha256 verified)")
        if job["endpoints"]:
            out.print(endpoints_text(job["endpoints"]))


def _follow_clone(client: Client, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    with _byte_progress(transient=False, disable=quiet) as progress:
        task = progress.add_task(f"{job['source']}: {job['state']}", total=None)
        while job["state"] not in TERMINAL_CLONE:
            time.sleep(0.2)
            job = client.get(f"/clones/{job['id']}")
            active = sum(1 for s in job.get("sources", []) if s.get("bytes"))
            via = f" from {active} sources" if active > 1 else ""
            progress.update(
                task,
                description=f"{job['source']}: {job['state']}{via}",
                total=job["bytes_total"],
                completed=job["bytes_done"],
            )
    return job


@app.command()
def clones(as_json: JsonOpt = False) -> None:
    """Clone jobs of this node: state, bytes, rate, and the error of failed ones."""
    jobs = Client().get("/clones")["clones"]
    if as_json:
        emit_json(jobs)
        return
    table = Table("id", "source", "into", "state", "progress", "rate", "error", box=None)
    for j in jobs:
        progress = f"{human_size(j['bytes_done'])}/{human_size(j['bytes_total'])}"
        rate = f"{human_size(j['rate'])}/s" if j["state"] == "downloading" else ""
        table.add_row(
            j["id"], j["source"], j["target"], j["state"], progress, rate, j["error"] or ""
        )
    out.print(table if jobs else "no clones yet")


# the machine and its environments (aienv/cli/runtimes.py), after the workspace commands
for command in (
    system.system,
    runtimes.plan,
    runtimes.launch,
    runtimes.ps,
    runtimes.stop,
    runtimes.logs,
    system.events,
    capture,
):
    app.command()(command)


def main() -> None:
    try:
        app()
    except CliError as exc:
        err.print(f"[red]aienv: {exc.message}[/]", highlight=False)
        sys.exit(exc.exit_code)
    except AienvError as exc:  # raised by `serve` itself: settings, interfaces, ports
        err.print(f"[red]aienv: {exc.message}[/]", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # never a traceback for a person; the node log has details
        err.print(f"[red]aienv: unexpected error: {exc}[/]", highlight=False)
        sys.exit(1)
