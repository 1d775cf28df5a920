"""``aienv setup``: a workspace's setup steps on this node — how each stands, running
those not done, their output. Registered on the main app by ``aienv.cli.main``."""

import sys
from typing import Annotated, Any

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, out, table


def steps_text(steps: list[dict[str, Any]]) -> str:
    """The steps as a table: name, state, what runs here, and why one failed."""
    rows = [[s["name"], s["state"], s["runs"] or "-", s["detail"]] for s in steps]
    return table(["step", "state", "runs", "detail"], rows)


def setup(
    name: Annotated[str, typer.Argument(help="The workspace.")],
    again: Annotated[bool, typer.Option("--again", help="Run every step, done or not.")] = False,
    show: Annotated[bool, typer.Option("--status", help="Only show how the steps stand.")] = False,
    log: Annotated[bool, typer.Option("--log", help="Show the steps' output.")] = False,
    tail: Annotated[int, typer.Option(help="Lines of output --log shows.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Run a workspace's setup steps that are not done on this node (a launch runs them
    too), and show how each stands. A step runs once, and again only when it changes."""
    client = Client()
    if log:
        sys.stdout.write(client.get(f"/workspaces/{name}/setup/log", params={"tail": tail}))
        return
    data = client.get(f"/workspaces/{name}/setup")
    if not data["steps"]:
        if as_json:
            emit_json(data)
            return
        out.line(f"{name} declares no setup step")
        return
    if not show:
        try:
            data = client.post(f"/workspaces/{name}/setup", {"again": again})
        except CliError as exc:
            if not as_json:
                out.line(steps_text(client.get(f"/workspaces/{name}/setup")["steps"]))
            raise exc from None
    if as_json:
        emit_json(data)
        return
    out.line(f"platform: {', '.join(data['platform'])}")
    out.line(steps_text(data["steps"]))
