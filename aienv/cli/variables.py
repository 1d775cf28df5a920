"""``aienv env`` (the values this node holds for a workspace's variables) and what
``launch`` and ``clone`` use to take them: ``--env NAME=VALUE``, ``--env-file`` and,
at a terminal, a prompt for each one the launch still needs. Registered on the main
app by ``aienv.cli.main``."""

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, out, table

env_app = typer.Typer(
    help="Values this node holds for a workspace's variables (keys, passwords, choices).",
    no_args_is_help=True,
)
VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
EnvOpt = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="NAME=VALUE for a variable of the workspace (repeatable)."),
]
EnvFileOpt = Annotated[
    Path | None,
    typer.Option("--env-file", help="A file of NAME=VALUE lines (# starts a comment)."),
]


def assignments(pairs: list[str] | None, env_file: Path | None) -> dict[str, str]:
    """The values given as ``--env`` and in ``--env-file`` (``--env`` wins)."""
    lines: list[tuple[str, str]] = []
    if env_file is not None:
        try:
            text = env_file.read_text()
        except OSError as exc:
            raise CliError(f"cannot read {env_file}: {exc.strerror}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append((f"{env_file}:{number}", line))
    lines += [("--env", pair) for pair in pairs or []]
    values: dict[str, str] = {}
    for where, line in lines:
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not VAR.fullmatch(name):
            raise CliError(f"{where}: {line!r} is not NAME=VALUE with a variable name")
        values[name] = value
    return values


def ask(workspace: str, needed: list[dict[str, Any]]) -> dict[str, str]:
    """A value for each of ``needed`` from the person at the terminal (secrets unseen);
    without a terminal, an error naming them and how to give them."""
    names = ", ".join(v["name"] for v in needed)
    what = "the variable" if len(needed) == 1 else "the variables"
    if not sys.stdin.isatty():
        first = needed[0]["name"]
        raise CliError(
            f"{workspace} needs {what} {names}: give {'it' if len(needed) == 1 else 'them'} "
            f"with --env {first}=VALUE (or --env-file FILE), or once with "
            f"`aienv env set {workspace} {first}`"
        )
    out.print(f"{workspace} needs {what} {names} (kept on this node only):")
    values = {}
    for var in needed:
        about = f" ({var['description']})" if var.get("description") else ""
        values[var["name"]] = typer.prompt(
            f"  {var['name']}{about}", hide_input=bool(var.get("secret", True))
        )
    return values


def launch_with_values(
    client: Client, body: dict[str, Any], values: dict[str, str]
) -> dict[str, Any]:
    """``POST /environments`` with ``values``; when the node says more are needed, ask
    for them and try once more."""
    try:
        return client.post("/environments", {**body, "variables": values})  # type: ignore[no-any-return]
    except CliError as exc:
        if exc.code != "variable_missing":
            raise
        asked = ask(body["workspace"], exc.data.get("variables", []))
    return client.post("/environments", {**body, "variables": {**values, **asked}})  # type: ignore[no-any-return]


@env_app.command("list")
def list_variables(workspace: str, as_json: JsonOpt = False) -> None:
    """The workspace's variables: needed or not, held here or not (secrets not shown)."""
    found = Client().get(f"/workspaces/{workspace}/variables")["variables"]
    if as_json:
        emit_json(found)
        return
    if not found:
        out.line(f"{workspace} names no variables")
        return
    rows = []
    for v in found:
        held = ("secret, set" if v["secret"] else repr(v.get("value"))) if v["set"] else "not set"
        if not v["set"] and v.get("default") is not None:
            held = f"default {v['default']!r}"
        need = "required" if v["required"] else "optional"
        rows.append([v["name"], need, held, v.get("description") or ""])
    out.line(table(["name", "", "value", "what it is"], rows))


@env_app.command("set")
def set_variable(
    workspace: str,
    name: str,
    value: Annotated[
        str | None,
        typer.Option(
            "--value", help="The value (else asked at the terminal, unseen, or read from stdin)."
        ),
    ] = None,
) -> None:
    """Hold a value for one of the workspace's variables on this node."""
    if value is None:
        if sys.stdin.isatty():
            value = typer.prompt(f"{name}", hide_input=True)
        else:
            value = sys.stdin.read().removesuffix("\n")
    Client().put(f"/workspaces/{workspace}/variables/{name}", {"value": value})
    out.line(f"{workspace}: {name} set (the next launch gets it)")


@env_app.command("unset")
def unset_variable(workspace: str, name: str) -> None:
    """Forget the value this node holds for a variable."""
    Client().delete(f"/workspaces/{workspace}/variables/{name}")
    out.line(f"{workspace}: {name} unset")
