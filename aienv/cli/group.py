"""Commands of the node group: pair, unpair, group, move, and the group forms of
launch (``--on``), ps (``--group``), stop and logs (``--on``). Registered on the
main app by ``aienv.cli.main``; ``runtimes`` hands its ``--on`` cases here."""

import sys
import time
from typing import Annotated, Any

import typer

from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, endpoints_text, human_size, out, table

WAIT_EVERY = 1.0


def pair(
    peer: Annotated[
        str | None,
        typer.Argument(
            help="The node to pair with (it shows a code: `aienv pair` there). "
            "Without it, this node shows a code for another to type."
        ),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Show the code and return at once.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pair this node with another, with a code one shows and the other types; the code
    is read from stdin when it is not a terminal (scripts)."""
    client = Client()
    if peer is None:
        _show_code(client, no_wait, as_json)
        return
    if sys.stdin.isatty():
        code = typer.prompt(f"the code {peer} shows")
    else:
        code = sys.stdin.readline().strip()
    member = client.post("/group/members", {"peer": peer, "code": code})
    if as_json:
        emit_json(member)
        return
    out.print(f"paired with [green]{member['name']}[/] ({member['node_id'][:12]})")


def _show_code(client: Client, no_wait: bool, as_json: bool) -> None:
    shown = client.post("/group/code")
    node = client.get("/node")
    if as_json:
        emit_json(shown)
        return
    out.print(f"pairing code: [bold]{shown['code']}[/] (valid {shown['expires_in'] // 60} min)")
    out.line(f"type it on the other node: aienv pair {node['name']}")
    if no_wait:
        return
    while True:
        time.sleep(WAIT_EVERY)
        status = client.get("/group/code")
        if status["joined"]:
            names = ", ".join(m["name"] for m in status["joined"])
            out.print(f"paired with [green]{names}[/]")
            client.delete("/group/code")
            return
        if not status["open"]:
            raise CliError("the code expired (or was guessed wrong too often): run it again", 3)


def unpair(node: Annotated[str, typer.Argument(help="A paired node (name or id prefix).")]) -> None:
    """Forget a paired node; it is told, and forgets this one."""
    member = Client().delete(f"/group/members/{node}")
    out.print(f"unpaired {member['name']} ({member['node_id'][:12]})")


def group(as_json: JsonOpt = False) -> None:
    """This node's offer to its group and the nodes it is paired with."""
    data = Client().get("/group")
    if as_json:
        emit_json(data)
        return
    offer = data["offer"]
    cpus = "all" if offer["cpus"] is None else f"{offer['cpus']:g}"
    memory = "all free" if offer["memory"] is None else human_size(offer["memory"])
    gpus = "all" if offer["gpus"] is None else str(offer["gpus"])
    takes = "takes launches" if offer["launches"] else "takes no launches"
    out.line(f"offer to paired nodes: {cpus} CPUs, {memory} memory, {gpus} GPUs ({takes})")
    rows = [[m["name"], m["node_id"][:12], "online" if m["online"] else "away",
             m.get("address") or "-"] for m in data["members"]]  # fmt: skip
    out.line(table(["node", "id", "state", "address"], rows) if rows else "no paired nodes")


def _plan_cell(verdict: dict[str, Any]) -> str:
    plan = verdict.get("plan")
    if not plan:
        return "-"
    cpus = "all" if plan["cpus"] is None else f"{plan['cpus']:g}"
    memory = "-" if plan["memory"] is None else human_size(plan["memory"])
    return f"{cpus} CPU, {memory}" + (" GPU" if plan["gpu"]["use"] else "")


def ranking_text(ranking: list[dict[str, Any]]) -> str:
    rows = []
    for i, c in enumerate(ranking, 1):
        why = "; ".join(c.get("shortfalls") or c.get("notes") or [])
        free = c.get("free") or {}
        memory = human_size(free["memory"]) if free.get("memory") is not None else "-"
        rows.append([str(i), c["node"] + (" (here)" if c.get("here") else ""), c["fit"],
                     _plan_cell(c), memory, f"{c.get('load', 0):.2f}", why])  # fmt: skip
    return table(["#", "node", "fit", "plan", "free memory", "load", "why"], rows)


def launch_on(
    workspace: str, environment: str | None, on: str, dry_run: bool, force: bool, as_json: bool
) -> None:
    """``aienv launch … --on``: placed by the group."""
    if force:
        raise CliError("--force does not go with --on: a node of the group runs what fits it")
    body = {"workspace": workspace, "environment": environment, "on": on, "dry_run": dry_run}
    result = Client(timeout=None).post("/group/launch", body)
    if as_json:
        emit_json(result)
        return
    out.line(ranking_text(result["ranking"]))
    if dry_run:
        return
    record = result["environment"]
    out.print(f"[green]{record['id']}[/] {record['state']} on {result['node']} "
              f"({result['seconds']:g} s)")  # fmt: skip
    out.print(endpoints_text(_lan_first(record["endpoints"], result["node_id"])))


def _lan_first(endpoints: list[dict[str, Any]], node_id: str) -> list[dict[str, Any]]:
    """On another node, the links that reach it are its LAN ones."""
    here = Client().get("/node")["id"] == node_id
    if here:
        return endpoints
    return [{**ep, "url": ep.get("lan_url") or ep["url"], "lan_url": None}
            for ep in endpoints]  # fmt: skip


def ps_group(all_: bool, as_json: bool) -> None:
    envs = Client().get("/group/environments")["environments"]
    if as_json:
        emit_json(envs)
        return
    rows = []
    for e in envs:
        urls = " ".join(ep.get("lan_url") or ep["url"] for ep in e.get("endpoints") or [])
        state = e["state"] + (f" ({e['error']})" if e.get("error") and e["state"] in
                              ("failed", "lost") else "")  # fmt: skip
        rows.append([e["node"], e["id"], e.get("runtime", "-"), _plan_cell(e), state, urls])
    headers = ["node", "id", "runtime", "plan", "state", "endpoints"]
    out.line(table(headers, rows) if rows else "no environments run in the group")


def stop_on(env_id: str, node: str | None) -> None:
    params = {"node": node} if node else None
    record = Client().request("POST", f"/group/environments/{env_id}/stop", params=params)
    out.print(f"{record['id']} {record['state']} on {record['node']}")


def logs_on(env_id: str, node: str | None, tail: int) -> None:
    params: dict[str, Any] = {"tail": tail}
    if node:
        params["node"] = node
    sys.stdout.write(Client().get(f"/group/environments/{env_id}/logs", params=params))


def move(
    environment: Annotated[str, typer.Argument(help="The environment (WS.ENV) running here.")],
    to: Annotated[str, typer.Option("--to", help="A paired node, or auto.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Move an environment to another node of the group, with its changed files and
    state; the copy here goes once the new one runs."""
    result = Client(timeout=None).post("/group/move", {"environment": environment, "to": to})
    if as_json:
        emit_json(result)
        return
    record = result["environment"]
    out.print(f"[green]{record['id']}[/] {record['state']} on {result['node']}")
    out.print(endpoints_text(_lan_first(record["endpoints"], result["node_id"])))
