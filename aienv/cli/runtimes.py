"""Commands about environments on this machine: plan, launch, ps, stop, logs and
snapshots (``aienv system`` is in ``aienv.cli.system``). Registered on the main
app by ``aienv.cli.main``."""

import sys
from typing import Annotated, Any

import typer

from aienv.cli import group
from aienv.cli.client import Client, CliError
from aienv.cli.render import JsonOpt, emit_json, endpoints_text, human_size, out, plan_text, table
from aienv.cli.variables import EnvFileOpt, EnvOpt, assignments, launch_with_values

snapshot_app = typer.Typer(
    help="Snapshots of an environment (VMs): create, list, revert, delete.",
    no_args_is_help=True,
)
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Launch even when requirements are not met here.")
]
EnvArg = Annotated[str | None, typer.Argument(help="The environment (default: the first).")]


def plan(
    workspace: str,
    environment: EnvArg = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """How an environment would run here: CPUs, memory, GPU, acceleration, ports."""
    params: dict[str, str] = {"force": str(force).lower()}
    if environment:
        params["environment"] = environment
    result = Client().get(f"/workspaces/{workspace}/plan", params=params)
    if as_json:
        emit_json(result)
        return
    out.print(plan_text(result), highlight=False)


def launch(
    workspace: str,
    environment: EnvArg = None,
    force: ForceOpt = False,
    env: EnvOpt = None,
    env_file: EnvFileOpt = None,
    on: Annotated[
        str | None,
        typer.Option(
            "--on",
            help="Run it on the group's best node (auto), here, or a paired "
            "node; WORKSPACE may then be PEER/WORKSPACE.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --on: show the ranking, launch nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Launch an environment of a local workspace, showing its plan first; asks for the
    values of its variables that this node does not hold yet."""
    if on is not None or dry_run:
        group.launch_on(workspace, environment, on or "auto", dry_run, force, as_json)
        return
    values = assignments(env, env_file)
    client = Client()
    params: dict[str, str] = {"force": str(force).lower()}
    if environment:
        params["environment"] = environment
    shown = client.get(f"/workspaces/{workspace}/plan", params=params)
    if not as_json:
        out.print(plan_text(shown), highlight=False)
    body = {"workspace": workspace, "environment": environment, "force": force}
    record = launch_with_values(client, body, values)
    if as_json:
        emit_json(record)
        return
    out.print(f"[green]{record['id']}[/] {record['state']}")
    out.print(endpoints_text(record["endpoints"]))


def _plan_cell(e: dict[str, Any]) -> str:
    p = e.get("plan")
    if not p:
        return "-"
    cpus = "all" if p["cpus"] is None else f"{p['cpus']:g}"
    mem = "-" if p["memory"] is None else human_size(p["memory"])
    extra = " GPU" if p["gpu"]["use"] else ""
    extra += f" {p['accel']}" if p.get("accel") else ""
    return f"{cpus} CPU, {mem}{extra}"


def ps(
    as_json: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include stopped ones.")] = False,
    in_group: Annotated[
        bool, typer.Option("--group", "-g", help="Every node of the group, with where each runs.")
    ] = False,
) -> None:
    """Environments on this node: runtime, plan, state and endpoint URLs."""
    if in_group:
        group.ps_group(all_, as_json)
        return
    envs = Client().get("/environments")["environments"]
    if not all_:
        envs = [e for e in envs if e["state"] not in ("stopped",)]
    if as_json:
        emit_json(envs)
        return
    rows = []
    for e in envs:
        urls = " ".join(ep["url"] for ep in e["endpoints"])
        state = e["state"] + (
            f" ({e['error']})" if e.get("error") and e["state"] == "failed" else ""
        )
        rows.append([e["id"], e["runtime"], _plan_cell(e), state, urls])
    headers = ["id", "runtime", "plan", "state", "endpoints"]
    out.line(table(headers, rows) if envs else "no environments running")


def _env_ids(client: Client, ref: str) -> list[str]:
    if "." in ref:
        return [ref]
    envs = [e["id"] for e in client.get("/environments")["environments"] if e["workspace"] == ref]
    if not envs:
        raise CliError(f"no environment of workspace {ref!r} has been launched here", 4)
    return envs


OnOpt = Annotated[
    str | None,
    typer.Option(
        "--on", help="The paired node it runs on (found by itself when this node placed it there)."
    ),
]


def _elsewhere(client: Client, name: str, on: str | None) -> bool:
    """Whether ``name`` is an environment on another node of the group."""
    if on is not None:
        return True
    if "." not in name:
        return False
    return not any(e["id"] == name for e in client.get("/environments")["environments"])


def stop(
    name: Annotated[str, typer.Argument(help="A workspace name or an environment id (WS.ENV).")],
    on: OnOpt = None,
) -> None:
    """Stop a workspace's environments (here, or one placed on a paired node)."""
    client = Client()
    if _elsewhere(client, name, on):
        group.stop_on(name, on)
        return
    for env_id in _env_ids(client, name):
        env = client.post(f"/environments/{env_id}/stop")
        out.print(f"{env['id']} {env['state']}")


def logs(
    name: str, tail: Annotated[int, typer.Option(help="Lines to show.")] = 200, on: OnOpt = None
) -> None:
    """Show an environment's output (stdout and stderr, or a VM's console)."""
    client = Client()
    if _elsewhere(client, name, on):
        group.logs_on(name, on, tail)
        return
    for env_id in _env_ids(client, name):
        sys.stdout.write(client.get(f"/environments/{env_id}/logs", params={"tail": tail}))


EnvId = Annotated[str, typer.Argument(help="The environment id (WS.ENV) or workspace name.")]
SnapName = Annotated[str, typer.Argument(help="The snapshot's name.")]


def _one_env(client: Client, ref: str) -> str:
    ids = _env_ids(client, ref)
    if len(ids) > 1:
        raise CliError(f"workspace {ref!r} has several environments: name one ({', '.join(ids)})")
    return ids[0]


@snapshot_app.command("create")
def snapshot_create(env: EnvId, name: SnapName) -> None:
    """Take a snapshot of an environment (a running VM keeps running)."""
    client = Client()
    env_id = _one_env(client, env)
    client.post(f"/environments/{env_id}/snapshots", {"name": name})
    out.print(f"snapshot {name} of {env_id} created")


@snapshot_app.command("list")
def snapshot_list(env: EnvId, as_json: JsonOpt = False) -> None:
    """An environment's snapshots."""
    client = Client()
    env_id = _one_env(client, env)
    snaps = client.get(f"/environments/{env_id}/snapshots")["snapshots"]
    if as_json:
        emit_json(snaps)
        return
    rows = [[s["name"], str(s.get("created", "")), str(s.get("state", ""))] for s in snaps]
    out.line(table(["name", "created", "state"], rows) if snaps else f"{env_id} has no snapshots")


@snapshot_app.command("revert")
def snapshot_revert(env: EnvId, name: SnapName) -> None:
    """Bring an environment back to a snapshot (its disk, and memory if it was running)."""
    client = Client()
    env_id = _one_env(client, env)
    client.post(f"/environments/{env_id}/snapshots/{name}/revert")
    out.print(f"{env_id} reverted to {name}")


@snapshot_app.command("delete")
def snapshot_delete(env: EnvId, name: SnapName) -> None:
    """Delete a snapshot."""
    client = Client()
    env_id = _one_env(client, env)
    client.delete(f"/environments/{env_id}/snapshots/{name}")
    out.print(f"snapshot {name} of {env_id} deleted")
