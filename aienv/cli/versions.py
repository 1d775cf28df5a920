"""Commands about a workspace's versions: history, diff, update, rollback. Registered
on the main app by ``aienv.cli.main``."""

from datetime import datetime
from typing import Annotated, Any

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, human_size, out, table


def update_text(pending: dict[str, Any]) -> str:
    """``update available (1.2.0 (r3) → 1.3.0 (r4): 3 file(s) changed, 12 MiB to fetch)``:
    the node's own words for it."""
    return f"update available ({pending.get('text') or pending.get('version')})"


def history(name: str, as_json: JsonOpt = False) -> None:
    """List a workspace's versions on this node, newest first, and the update its origin
    offers."""
    data = Client().get(f"/workspaces/{name}/versions")
    if as_json:
        emit_json(data)
        return
    rows = []
    for v in data["versions"]:
        mark = "*" if v["digest"] == data["current"] else ""
        mark += " previous" if v["digest"] == data["previous"] and not mark else ""
        when = datetime.fromtimestamp(v["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            [
                mark.strip(),
                f"r{v['revision']}" if v["revision"] else "-",
                v["version"],
                v["how"],
                when,
                human_size(v["size"]),
                str(v["files"]),
                v["digest"][:16],
            ]
        )
    headers = ["", "revision", "version", "how", "when", "size", "files", "sha256"]
    out.line(table(headers, rows) if rows else f"{name} has no version yet: share it to make one")
    if data.get("pending"):
        out.print(f"{update_text(data['pending'])}: aienv update {name}", highlight=False)


def diff(name: str, as_json: JsonOpt = False) -> None:
    """Show the files changed here since the version the workspace came as."""
    data = Client().get(f"/workspaces/{name}/diff")
    if as_json:
        emit_json(data)
        return
    lines = [("M", p) for p in data["modified"]]
    lines += [("A", p) for p in data["added"]] + [("D", p) for p in data["removed"]]
    if not lines:
        out.line(f"no local changes against {data['against']}")
        return
    out.line(f"local changes against {data['against']}:")
    for mark, path in sorted(lines, key=lambda x: x[1]):
        out.line(f"  {mark} {path}")


def update(
    name: str,
    keep_local: Annotated[
        bool, typer.Option("--keep-local", help="Where both sides changed a file, keep yours.")
    ] = False,
    theirs: Annotated[
        bool, typer.Option("--theirs", help="Where both sides changed a file, take the new one.")
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Stop its running environments, start them again.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Update a cloned workspace to the version its origin offers, fetching only the
    files that changed. Your changes are kept; a file changed on both sides is merged
    (text) or needs --keep-local or --theirs."""
    if keep_local and theirs:
        raise CliError("choose one of --keep-local and --theirs")
    keep = "keep-local" if keep_local else "theirs" if theirs else None
    body = {"keep": keep, "restart": restart}
    result = Client(timeout=None).post(f"/workspaces/{name}/update", body)
    if as_json:
        emit_json(result)
        return
    changed = result["changed"]
    count = sum(len(changed[k]) for k in ("modified", "added", "removed"))
    out.print(
        f"updated [bold]{name}[/] {result['from']} → {result['to']}: {count} file(s) changed, "
        f"{human_size(result['received'])} received of {human_size(result['size'])} "
        f"({human_size(result['reused'])} reused) in {result['seconds']:.1f} s",
        highlight=False,
    )
    local = result["local"]
    kept = len(local["modified"]) + len(local["added"]) + len(local["removed"])
    if kept:
        out.line(f"kept {kept} local change(s)")
    for path in result["merged"]:
        out.line(f"  merged {path}")
    for path in result["beside"]:
        out.line(f"  wrote  {path}")
    for line in result["git"]:
        out.line(f"  {line}")
    for env_id in result["restarted"]:
        out.line(f"  restarted {env_id}")


def rollback(
    name: str,
    version: Annotated[str | None, typer.Argument(help="The version it returns to.")] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Stop its running environments, start them again.")
    ] = False,
) -> None:
    """Return a workspace to the version it had before its last update."""
    done = Client(timeout=None).post(
        f"/workspaces/{name}/rollback", {"version": version, "restart": restart}
    )
    out.print(f"rolled {name} back to {done['version']}", highlight=False)
