"""Commands about this node's workspaces: create, list, show, delete, share, unshare.
Registered on the main app by ``aienv.cli.main``."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, byte_progress, emit_json, err, human_size, out, table
from aienv.cli.versions import update_text

if TYPE_CHECKING:
    import threading

    from rich.progress import Progress


def create(
    name: str,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A folder: its workspace.yaml, or one drafted from its project files "
            "(requirements.txt, pyproject.toml, environment.yml, Dockerfile, "
            "devcontainer.json, package.json, notebooks).",
        ),
    ] = None,
    template: Annotated[
        str | None, typer.Option(help="A built-in template (default hello-web).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Write a draft without asking.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a workspace from a folder (copied into the node) or a template. A folder
    without a workspace.yaml gets one drafted from its files, shown before it is written."""
    body: dict[str, Any] = {"name": name}
    if source is not None:
        if not source.is_dir():
            raise CliError(f"{source} is not a folder")
        body["from"] = str(source.resolve())
        if not (source / "workspace.yaml").is_file():
            body["draft"] = _agree_to_draft(body, yes, as_json)
    if template is not None:
        body["template"] = template
    ws = Client().post("/workspaces", body)
    if as_json:
        emit_json(ws)
    else:
        out.print(f"created workspace [bold]{ws['name']}[/] ({ws['version']}) at {ws['path']}")
        if ws.get("draft"):
            out.print(f"next: aienv launch {ws['name']}   (see DRAFT.md in it for what to check)")


def _agree_to_draft(body: dict[str, Any], yes: bool, as_json: bool) -> bool:
    """Show the workspace.yaml drafted from the folder's files; True once the person (or
    ``--yes``) agrees to write it."""
    draft = Client().post("/workspaces/draft", {"name": body["name"], "from": body["from"]})
    if not as_json:
        out.print(f"{body['from']} has no workspace.yaml; drafted from its files:\n")
        for line in draft["found"]:
            out.print(f"  found  {line}", markup=False, highlight=False)
        out.print("")
        out.print(draft["yaml"], markup=False, highlight=False)
        for line in draft["todo"]:
            out.print(f"  check  {line}", markup=False, highlight=False)
    if yes:
        return True
    if not sys.stdin.isatty() or as_json:
        raise CliError("nothing written: run again with --yes to create it from this draft")
    if not typer.confirm(f"Create workspace {body['name']} from this draft?", default=True):
        raise CliError("nothing written")
    return True


def list_cmd(as_json: JsonOpt = False) -> None:
    """List this node's workspaces."""
    items = Client().get("/workspaces")["workspaces"]
    if as_json:
        emit_json(items)
        return
    rows = []
    for ws in items:
        origin = ws.get("origin") or {}
        where = (
            f"{origin.get('peer_name')}/{origin.get('workspace')}"
            if origin.get("kind") == "clone"
            else origin.get("kind", "")
        )
        size = human_size(ws["archive"]["size"]) if ws["archive"] else "-"
        shared = "yes" if ws["shared"] else "no"
        pending = ws.get("update")
        news = f"{pending.get('version')} (r{pending.get('revision')})" if pending else ""
        rows.append(
            [ws["name"], ws["version"], ",".join(ws["runtimes"]), shared, size, where, news]
        )
    headers = ["name", "version", "runtimes", "shared", "size", "origin", "update available"]
    if not any(row[-1] for row in rows):  # the column only when some clone has one
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    out.line(table(headers, rows) if items else "no workspaces yet: `aienv create NAME --from DIR`")


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
    if ws.get("update"):
        out.print(f"{update_text(ws['update'])}: aienv update {name}", highlight=False)
    for env in ws["environments"]:
        eps = ", ".join(f"{e['name']}:{e['port']}" for e in env["endpoints"]) or "no endpoints"
        out.print(f"environment {env['name']} ({env['runtime']}): {eps}")
    for step in ws.get("setup", []):
        where = f" (on {', '.join(step['platforms'])})" if step["platforms"] else ""
        out.print(f"setup step {step['name']}{where}: {step['runs']}", highlight=False)


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


def share(name: str) -> None:
    """Share a workspace: every node on the LAN sees it at once.

    The first share (and one after the files changed) packs the workspace, with a
    progress bar; Ctrl-C cancels the packing and shares nothing.
    """
    import threading

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


def _follow_pack(name: str, worker: "threading.Thread") -> None:
    """A transient bar while the node packs, drawn only once packing is seen and only on
    a terminal: a share that packs nothing, or output to a file, prints nothing here."""
    client = Client()
    progress: Progress | None = None
    try:
        while worker.is_alive():
            worker.join(0.2)
            if not worker.is_alive() or not err.is_terminal:
                continue
            try:
                packs = _active_packs(client, name)
            except CliError:
                continue
            if not packs:
                continue
            if progress is None:
                progress = byte_progress(transient=True)
                progress.start()
                task = progress.add_task(f"packing {name}", total=packs[0]["total"])
            progress.update(task, completed=packs[0]["bytes"], total=packs[0]["total"])
    finally:
        if progress is not None:
            progress.stop()


def unshare(name: str) -> None:
    """Stop sharing a workspace."""
    Client().post(f"/workspaces/{name}/unshare")
    out.print(f"{name} is no longer shared")
