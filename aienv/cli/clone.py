"""``aienv clone`` (download, verify, install and launch a peer's workspace, with a
progress bar) and ``aienv clones`` (the node's clone jobs). Registered on the main
app by ``aienv.cli.main``."""

import sys
import time
from typing import Annotated, Any

import typer

from aienv.cli.client import EXIT_CONFLICT, Client, CliError
from aienv.cli.render import (
    JsonOpt,
    byte_progress,
    emit_json,
    endpoints_text,
    human_size,
    out,
    table,
)
from aienv.cli.variables import EnvFileOpt, EnvOpt, assignments, launch_with_values

TERMINAL_CLONE = {"running", "installed", "failed", "cancelled"}


def clone(
    source: Annotated[
        str,
        typer.Argument(
            help="PEER/WORKSPACE; PEER is a node name, a node-id prefix or HOST[:PORT]."
        ),
    ],
    as_name: Annotated[
        str | None, typer.Option("--as", help="Local name (default: the workspace's).")
    ] = None,
    no_launch: Annotated[
        bool, typer.Option("--no-launch", help="Install only; do not launch.")
    ] = False,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Start the clone and return; follow it with `aienv clones`."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Launch even when requirements are not met here.")
    ] = False,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the peer's password (its node or workspace password) from stdin.",
        ),
    ] = False,
    env: EnvOpt = None,
    env_file: EnvFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download, verify, install, plan and launch a workspace shared by a peer.

    The download uses every peer that holds the same archive, resumes after
    interruptions (even a restart of this node) and is checked piece by piece.
    Values for the workspace's variables come from --env/--env-file or, at a
    terminal, are asked for before the launch; they stay on this node.
    """
    values = assignments(env, env_file)
    client = Client()
    job = client.post("/clones", _body(source, as_name, no_launch, values, force, password_stdin))
    if detach:
        if as_json:
            emit_json(job)
        else:
            out.print(f"clone [bold]{job['id']}[/] started: {source} → {job['target']}")
        return
    job = _follow_or_cancel(client, job, quiet=as_json)
    if job["state"] in ("failed", "cancelled"):
        if as_json:
            emit_json(job)
        raise CliError(f"clone {job['state']}: {job['error']}")
    if not as_json:
        out.print(f"[green]{job['target']}[/] {job['state']} (sha256 verified)")
    _after_install(client, job, values, launch=not no_launch, force=force, as_json=as_json)


def _after_install(
    client: Client, job: dict[str, Any], values: dict[str, str], *, launch: bool, force: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """What a finished clone still asks: a refused plan, values to give; else its links."""
    if job["state"] == "installed" and job.get("setup_error"):
        raise CliError(f"installed as {job['target']}, not launched: {job['setup_error']}")
    if job["state"] == "installed" and job.get("refused"):
        _launch_anyway(client, job, values, as_json)
    elif job["state"] == "installed" and launch and (values or job.get("needs")):
        body = {"workspace": job["target"], "force": force}
        _show(launch_with_values(client, body, values), as_json, launched=True)
    else:
        _show(job, as_json)


def _launch_anyway(
    client: Client, job: dict[str, Any], values: dict[str, str], as_json: bool
) -> None:
    """The plan did not fit this machine: installed, launched only on the person's word."""
    target = job["target"]
    hint = f"installed as {target}, not launched: {job['refused']}"
    if not sys.stdin.isatty() or as_json:
        raise CliError(f"{hint} (aienv launch {target} --force runs it anyway)", EXIT_CONFLICT)
    out.print(f"[yellow]{hint}[/]")
    if not typer.confirm("Launch it anyway?", default=False):
        raise CliError(f"not launched (aienv launch {target} --force runs it later)", EXIT_CONFLICT)
    launched = launch_with_values(client, {"workspace": target, "force": True}, values)
    _show(launched, as_json, launched=True)


def _body(
    source: str,
    as_name: str | None,
    no_launch: bool,
    values: dict[str, str],
    force: bool,
    password_stdin: bool,
) -> dict[str, Any]:
    """What ``POST /clones`` is sent: with values to hold first, the node only installs
    it, and this command launches it with them."""
    body: dict[str, Any] = {"source": source, "launch": not (no_launch or values), "force": force}
    if as_name:
        body["as"] = as_name
    if password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\r\n")
    return body


def _show(done: dict[str, Any], as_json: bool, *, launched: bool = False) -> None:
    """The clone job, or the environment launched after it: as JSON, or its links."""
    if as_json:
        emit_json(done)
        return
    if launched:
        out.print(f"[green]{done['id']}[/] {done['state']}")
    if done["endpoints"]:
        out.print(endpoints_text(done["endpoints"]))


def _follow_or_cancel(client: Client, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """The clone followed to its end; Ctrl-C cancels it (or says that it goes on)."""
    try:
        return _follow_clone(client, job, quiet)
    except KeyboardInterrupt:
        try:
            client.delete(f"/clones/{job['id']}")
            message = "clone cancelled"
        except CliError as exc:
            message = f"interrupted; the clone goes on in the node ({exc.message})"
        raise CliError(message, 130) from None


def _follow_clone(client: Client, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    with byte_progress(transient=False, disable=quiet) as progress:
        task = progress.add_task(f"{job['source']}: {job['state']}", total=None)
        while job["state"] not in TERMINAL_CLONE:
            time.sleep(0.2)
            job = client.get(f"/clones/{job['id']}")
            active = sum(1 for s in job.get("sources", []) if s.get("bytes"))
            via = f" from {active} sources" if active > 1 else ""
            progress.update(
                task,
                description=f"{job['source']}: {job['state']}{via}",
                total=job["bytes_total"],
                completed=job["bytes_done"],
            )
    return job


def clones(as_json: JsonOpt = False) -> None:
    """Clone jobs of this node: state, bytes, rate, and the error of failed ones."""
    jobs = Client().get("/clones")["clones"]
    if as_json:
        emit_json(jobs)
        return
    rows = []
    for j in jobs:
        progress = f"{human_size(j['bytes_done'])}/{human_size(j['bytes_total'])}"
        rate = f"{human_size(j['rate'])}/s" if j["state"] == "downloading" else ""
        rows.append(
            [j["id"], j["source"], j["target"], j["state"], progress, rate, j["error"] or ""]
        )
    headers = ["id", "source", "into", "state", "progress", "rate", "error"]
    out.line(table(headers, rows) if jobs else "no clones yet")
