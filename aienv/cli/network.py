"""``aienv node`` (this node) and ``aienv peers`` / ``aienv peer`` (the nodes it sees,
and the ones added by hand). Registered on the main app by ``aienv.cli.main``."""

import typer

from aienv.cli.client import Client
from aienv.cli.render import JsonOpt, emit_json, human_size, node_text, out

peer_app = typer.Typer(
    help="Manually added peers, for networks that block multicast.", no_args_is_help=True
)


def node_info(as_json: JsonOpt = False) -> None:
    """Show this node: id, addresses, TLS, discovery and its counters, runtimes, uploads."""
    data = Client().get("/node")
    if as_json:
        emit_json(data)
        return
    out.line(node_text(data))


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
