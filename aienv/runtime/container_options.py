"""What the container runtime asks of the engine, as pure settings and small blocking
helpers (each takes an SDK client and runs on a worker thread through ``Engine``).

``create_options`` turns a launch into the keyword arguments of
``containers.create`` with no engine at hand, so it is tested alone."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from aienv.dockerengine import explanation, sdk, sdk_errors
from aienv.errors import RuntimeFailure
from aienv.runtime.base import LaunchSpec
from aienv.runtime.ports import port_variable
from aienv.runtime.process import expand

if TYPE_CHECKING:
    from aienv.workspace.manifest import ContainerSpec, Environment

log = logging.getLogger(__name__)

#: how long a stop waits for the removal another call began
REMOVAL_SECONDS = 30.0

#: capabilities of Docker's default set that a tool in a container does not need
#: (making device nodes, raw sockets, file capabilities, chroot, audit, passing
#: capabilities on); Docker keeps the others (chown, setuid for an entrypoint's
#: user switch, binding a port below 1024, ...)
DROPPED_CAPABILITIES = ["AUDIT_WRITE", "MKNOD", "NET_RAW", "SETFCAP", "SETPCAP", "SYS_CHROOT"]


def container_name(env_id: str) -> str:
    """``aienv-WS.ENV``: names cannot hold a dot, so no two environments share one."""
    return f"aienv-{env_id}"


def block_of(env: Environment) -> ContainerSpec:
    if env.container is None:
        raise RuntimeFailure(f"environment {env.name!r} has no container block")
    return env.container


def create_options(
    spec: LaunchSpec, image: str, name: str, *, hardened: bool = True, pids: int | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``containers.create`` for ``spec`` (pure: no engine):
    ``hardened``, no new privileges and fewer capabilities than Docker's default."""
    block = block_of(spec.environment)
    endpoints = spec.environment.endpoints
    inside = {ep.name: ep.port for ep in endpoints}  # the app listens on the container port
    env = {**block.env, **spec.env}
    for ep in endpoints:
        if port_variable(ep.name) in env:
            env[port_variable(ep.name)] = str(ep.port)
    options: dict[str, Any] = {
        "image": image,
        "name": name,
        "command": [expand(a, inside, env) for a in block.command] if block.command else None,
        "environment": env,
        "working_dir": block.workdir,
        "labels": {
            "aienv.env": spec.env_id,
            "aienv.node": spec.node_id,
            "aienv.workspace": spec.workspace,
        },
        "init": True,  # docker-init passes SIGTERM on; an app as PID 1 would ignore it
        "ports": {f"{ep.port}/tcp": spec.ports.get(ep.name, ep.port) for ep in endpoints},
        "mounts": [
            sdk().types.Mount(
                target=m.target,
                source=str((spec.root / m.source).resolve()),
                type="bind",
                read_only=m.read_only,
            )
            for m in block.mounts
        ],
    }
    isolation = spec.environment.isolation
    if hardened:
        options["security_opt"] = ["no-new-privileges"]
        options["cap_drop"] = DROPPED_CAPABILITIES
    if pids is not None:
        options["pids_limit"] = pids
    if isolation.network == "none":
        options["network_mode"] = "none"
        options["ports"] = {}
    if isolation.devices:
        options["devices"] = [f"{d}:{d}:rwm" for d in isolation.devices]
    plan = spec.plan
    if plan.cpus is not None:
        options["nano_cpus"] = round(plan.cpus * 1e9)
    if plan.memory is not None:
        options["mem_limit"] = plan.memory
        options["memswap_limit"] = plan.memory
    if plan.gpu.use:
        ids = [str(i) for i in plan.gpu.devices]
        which: dict[str, Any] = {"device_ids": ids} if ids else {"count": -1}  # -1: every GPU
        options["device_requests"] = [sdk().types.DeviceRequest(**which, capabilities=[["gpu"]])]
    return options


def clear_stale(client: Any, name: str, spec: LaunchSpec) -> None:
    """Remove a container of this name left by an earlier run of the same environment;
    refuse to touch one that belongs to something else."""
    try:
        old = client.containers.get(name)
    except sdk_errors().NotFound:
        return
    labels = old.labels or {}
    mine = labels.get("aienv.env") == spec.env_id
    if not mine or (old.status == "running" and labels.get("aienv.node") != spec.node_id):
        raise RuntimeFailure(
            f"a container named {name} already exists and does not belong to environment "
            f"{spec.env_id} of this node: remove it (docker rm -f {name}) and launch again"
        )
    log.info("removing the container %s left by an earlier run", name)
    old.remove(force=True)


def remove_container(client: Any, ident: str, stop_timeout: float | None) -> None:
    """Stop (if asked) and remove a container; one that is gone already is fine. It
    returns once the container is gone, also when another call was removing it."""
    try:
        container = client.containers.get(ident)
    except sdk_errors().NotFound:
        return
    try:
        if stop_timeout is not None:
            container.stop(timeout=max(0, math.ceil(stop_timeout)))
        container.remove(force=True)
    except sdk_errors().NotFound:
        return
    except sdk_errors().APIError as exc:
        if "already in progress" not in explanation(exc):
            raise
        _await_removal(client, ident)  # the end of its application is removing it


def _await_removal(client: Any, ident: str, within: float = REMOVAL_SECONDS) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            client.api.inspect_container(ident)
        except sdk_errors().NotFound:
            return
        time.sleep(0.05)
    raise RuntimeFailure(f"container {ident[:12]} is still being removed after {within:.0f} s")


def is_running(client: Any, ident: str) -> bool:
    try:
        attrs = client.api.inspect_container(ident)
    except sdk_errors().NotFound:
        return False
    return bool(attrs.get("State", {}).get("Running"))
