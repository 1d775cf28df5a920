"""``aienv capture``: make a workspace from a running process or container, so that a
peer can clone it and run its twin. Registered on the main app by ``aienv.cli.main``."""

from typing import Annotated, Any

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, human_size, out


def capture(
    process: Annotated[
        int | None, typer.Option("--process", "-p", help="The PID of a running process.")
    ] = None,
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="A Docker container's name or id.")
    ] = None,
    as_name: Annotated[
        str | None,
        typer.Option("--as", help="The workspace's name (default: from the program or container)."),
    ] = None,
    copy_limit: Annotated[
        str | None,
        typer.Option(
            help="Largest folder or file copied in (e.g. 500MiB; default 1GiB); "
            "larger ones are referenced, or mounted empty."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Capture a running process or container as a workspace (a twin a peer can run).

    Its command, working folder (or a container's image and mounts), environment,
    Python packages, open model files, ports and what it uses now are kept;
    secret-looking variables are left out and listed for you to fill in.
    """
    if (process is None) == (container is None):
        raise CliError("give exactly one of --process PID and --container NAME")
    body: dict[str, Any] = {"process": process} if process is not None else {"container": container}
    if as_name is not None:
        body["as"] = as_name
    if copy_limit is not None:
        body["copy_limit"] = copy_limit
    res = Client(timeout=None).post("/capture", body)
    if as_json:
        emit_json(res)
        return
    ws = res["workspace"]
    what = f"process {process}" if process is not None else f"container {container}"
    out.print(f"captured {what} as workspace [bold]{ws['name']}[/] at {ws['path']}")
    for line in res["captured"]:
        out.print(f"  {line}", highlight=False)
    if res["secrets"]:
        out.print(
            "[yellow]secrets left out[/] (fill them in workspace.yaml before launching): "
            + ", ".join(res["secrets"])
        )
    for item in res["not_copied"]:
        out.print(
            f"[yellow]not copied[/]: {item['path']} ({human_size(item['size'])}): {item['reason']}",
            highlight=False,
        )
    if res["skipped"]:
        out.print(f"left out of copied folders: {len(res['skipped'])} (see CAPTURE.md)")
    for note in res["notes"]:
        out.print(f"note: {note}", highlight=False)
    out.print("next:")
    for command in res["next"]:
        out.print(f"  {command}", highlight=False)
