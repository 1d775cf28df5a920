"""A captured Jupyter server (``jupyter lab``, ``jupyter notebook``, ``jupyter server``,
``python -m jupyterlab``…): its twin opens logged in, as the project drafts write it.

The original's own token — on its command line (``--IdentityProvider.token=…``,
``--ServerApp.token …``) or in ``JUPYTER_TOKEN`` — is left out: never written, and no
variable for anyone to fill. The endpoint says ``auth: {token: JUPYTER_TOKEN, query:
token}`` instead, so the node that launches the twin makes a token per launch (Jupyter
reads ``JUPYTER_TOKEN``) and hands its own user a link that carries it. The endpoint is
the server's port, named for it (``lab`` at ``/lab``) and given as ``{port.lab}`` (the
command gets ``--port`` when it had none); the other ports of its process tree are its
kernels', made anew per launch, and no endpoints. Pure: no I/O.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aienv.capture.read_process import PYTHON

TOKEN_VARIABLE = "JUPYTER_TOKEN"
AUTH = {"token": TOKEN_VARIABLE, "query": "token"}
DEFAULT_PORT = 8888
#: a server's console script -> its endpoint's name and the path that opens it
SERVERS = {
    "jupyter-lab": ("lab", "/lab"),
    "jupyter-notebook": ("notebook", "/tree"),
    "jupyter-nbclassic": ("notebook", "/tree"),
    "jupyter-server": ("jupyter", "/"),
}
#: ``python -m MODULE`` -> the console script it is
MODULES = {
    "jupyterlab": "jupyter-lab",
    "notebook": "jupyter-notebook",
    "nbclassic": "jupyter-nbclassic",
    "jupyter_server": "jupyter-server",
}
#: a token of any of its configurables: ``--IdentityProvider.token``, ``--ServerApp.token``
TOKEN_ARG = re.compile(r"^--[A-Za-z_]\w*\.token(=|$)")
PORT_ARG = re.compile(r"^--(port|[A-Za-z_]\w*\.port)(=|$)")
#: its variables that the twin's node sets for itself, or that name this machine's files
OWN_VARIABLES = {
    TOKEN_VARIABLE: "a login token: the twin's node makes one per launch (auth)",
    "JUPYTER_TOKEN_FILE": "a login token's file: the twin's node makes a token per launch",
}
PYTHON_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "-c"})
KERNEL_ROOM_MIB = 1024  # recommended: its kernels start after the capture, with their data


def server_script(cmdline: list[str]) -> str | None:
    """The console script of the Jupyter server ``cmdline`` runs, if it runs one."""
    args = list(cmdline)
    if args and PYTHON.match(Path(args[0]).name):
        args = args[1:]
        while args and args[0].startswith("-") and args[0] != "-m":
            args = args[2:] if args[0] in PYTHON_OPTIONS_WITH_VALUE else args[1:]
        if args[:1] == ["-m"] and len(args) > 1:
            module = args[1]
            args = [MODULES.get(module, module), *args[2:]]
    if not args:
        return None
    name = Path(args[0]).name
    if name == "jupyter" and len(args) > 1:
        name = f"jupyter-{args[1]}"
    return name if name in SERVERS else None


def without_token(cmdline: list[str]) -> tuple[list[str], bool]:
    """``cmdline`` without the token it gave (``--X.token=V`` or ``--X.token V``), and
    whether it gave an empty one (it ran with no login)."""
    out: list[str] = []
    empty = False
    skip = False
    for i, arg in enumerate(cmdline):
        if skip:
            skip = False
            continue
        if TOKEN_ARG.match(arg):
            if "=" in arg:
                value = arg.partition("=")[2]
            else:
                value = cmdline[i + 1] if i + 1 < len(cmdline) else ""
                skip = True
            empty = empty or value.strip("'\"") == ""
            continue
        out.append(arg)
    return out, empty


def _named_port(cmdline: list[str]) -> int | None:
    """The port the command line gives (``--port=N``, ``--port N``, ``--ServerApp.port=N``)."""
    for i, arg in enumerate(cmdline):
        if PORT_ARG.match(arg):
            value = arg.partition("=")[2] if "=" in arg else "".join(cmdline[i + 1 : i + 2])
            return int(value) if value.isdigit() else None
    return None


def server_endpoint(
    cmdline: list[str], endpoints: list[dict[str, Any]], script: str
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """The command line (with ``--port`` when it gave none), the server's one endpoint
    (logged in), and notes on the ports left out. ``cmdline`` is without its token."""
    named = _named_port(cmdline)
    ours = [e for e in endpoints if e["port"] == named] or [
        e for e in endpoints if e["protocol"] == "http"
    ]
    port = ours[0]["port"] if ours else named or DEFAULT_PORT
    if named is None:
        cmdline = [*cmdline, f"--port={port}"]
    name, path = SERVERS[script]
    notes = [
        f"port {e['port']} ({e['protocol'] or 'not probed'}): another of its process tree's "
        "(a kernel's, made anew per launch), not an endpoint"
        for e in endpoints
        if e["port"] != port
    ]
    endpoint = {"name": name, "port": port, "protocol": "http", "path": path, "auth": dict(AUTH)}
    return cmdline, [endpoint], notes


def memory_mib(values: dict[str, Any]) -> int:
    """The memory of ``requires`` or ``recommends`` (``"192MiB"``) in MiB, 0 when none."""
    text = str(values.get("memory", "0MiB"))
    return int(text.removesuffix("MiB")) if text.removesuffix("MiB").isdigit() else 0


def kernel_room_note() -> str:
    return (
        f"recommends raised to {KERNEL_ROOM_MIB}MiB: a Jupyter server's kernels (and what their "
        "notebooks load) start after the capture and are not in what it held"
    )


def login_note(script: str, empty: bool) -> str:
    """What ``CAPTURE.md`` says of the twin's login."""
    name = SERVERS[script][0]
    note = (
        f"a Jupyter server ({script}): its endpoint `{name}` logs in with a token the twin's "
        f"node makes per launch (`auth: {{token: {TOKEN_VARIABLE}}}`; the link it gives "
        "its own user opens it logged in); the original's own token is left out"
    )
    if empty:
        note += "; the original ran with no login at all (an empty token): the twin has one"
    return note
