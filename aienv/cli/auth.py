"""``aienv auth``: admin users, the node's peer password and workspace passwords
(stored hashed by the node).

Passwords are asked twice at a terminal, or read from the first line of stdin
with ``--password-stdin`` (for scripts); never taken as an argument, where
other users could read them in the process list.
"""

import sys
from typing import Annotated

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, out

auth_app = typer.Typer(
    help="Who may use this node: admin users and the password peers must give.",
    no_args_is_help=True,
)
admin_app = typer.Typer(help="Admin users (may change the node from any allowed address).")
peer_password_app = typer.Typer(help="The password peers must give to browse and download.")
workspace_password_app = typer.Typer(
    help="A workspace's own password, asked of peers for its details and its archive."
)
auth_app.add_typer(admin_app, name="admin")
auth_app.add_typer(peer_password_app, name="peer-password")
auth_app.add_typer(workspace_password_app, name="workspace-password")

StdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password: use --password-stdin")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@auth_app.command("show")
def show(as_json: JsonOpt = False) -> None:
    """Admin users, whether peers need a password, and addresses locked out now."""
    data = Client().get("/auth")
    if as_json:
        emit_json(data)
        return
    out.print(
        f"admin users:   {', '.join(data['admins']) or 'none (admin only from this machine)'}"
    )
    out.print(f"peer password: {'set' if data['peer_password'] else 'not set (peers need none)'}")
    protected = ", ".join(data["protected_workspaces"]) or "none"
    out.print(f"workspaces with a password: {protected}")
    for address, wait in data["locked_out"].items():
        out.print(f"locked out:    {address} for {wait:g} s more")


@admin_app.command("add")
def admin_add(user: str, password_stdin: StdinOpt = False) -> None:
    """Add an admin user, or change their password."""
    res = Client().request(
        "PUT", f"/auth/admins/{user}", json={"password": _password(password_stdin)}
    )
    out.print(f"admin user {res['admin']} saved")


@admin_app.command("remove")
def admin_remove(user: str) -> None:
    """Remove an admin user."""
    Client().delete(f"/auth/admins/{user}")
    out.print(f"admin user {user} removed")


@admin_app.command("list")
def admin_list(as_json: JsonOpt = False) -> None:
    """List the admin users."""
    admins = Client().get("/auth")["admins"]
    if as_json:
        emit_json(admins)
    else:
        out.print("\n".join(admins) or "no admin users")


@peer_password_app.command("set")
def peer_password_set(password_stdin: StdinOpt = False) -> None:
    """Require a password (any user name) from peers that browse or download."""
    Client().request("PUT", "/auth/peer-password", json={"password": _password(password_stdin)})
    out.print("peer password set: peers must log in to browse and download")


@peer_password_app.command("clear")
def peer_password_clear() -> None:
    """Let peers browse and download what is shared without a password."""
    Client().delete("/auth/peer-password")
    out.print("peer password cleared")


@workspace_password_app.command("set")
def workspace_password_set(workspace: str, password_stdin: StdinOpt = False) -> None:
    """Ask peers for a password to see WORKSPACE's details and download it.

    Nodes that cloned it before stop re-serving their copy once they hear it is
    protected; what they installed stays theirs.
    """
    Client().request(
        "PUT", f"/auth/workspaces/{workspace}", json={"password": _password(password_stdin)}
    )
    out.print(f"workspace {workspace} protected: peers clone it with `--password-stdin`")


@workspace_password_app.command("clear")
def workspace_password_clear(workspace: str) -> None:
    """Let peers see and download WORKSPACE (when shared) without its password."""
    Client().delete(f"/auth/workspaces/{workspace}")
    out.print(f"workspace {workspace} no longer asks for a password")
