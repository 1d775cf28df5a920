"""The container runtime against a real Docker engine (a private dockerd per module).

dockerd runs in the network namespace of one host of a namespace LAN; the
tests reach published ports from the LAN side, as a peer would. The image is
made on the spot (tests/system/container_image.py): nothing is pulled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from aienv.config import NodeSettings
from aienv.dockerengine.images import save_image
from aienv.errors import RuntimeFailure
from aienv.runtime.base import LaunchSpec
from aienv.runtime.container import ContainerRuntime
from aienv.runtime.container_options import container_name, create_options
from aienv.system.inventory import Capacity, Gpu
from aienv.system.plan import make_plan
from aienv.workspace.manifest_file import load_manifest
from tests.lan import Lan
from tests.system.container_image import DATA, IMAGE, PAGE, PORT, build_image, write_workspace

pytestmark = [pytest.mark.system]

HOSTS = 1

MiB = 1024**2
GiB = 1024**3
NODE = "node-under-test"
PUBLISHED = 28080  # the local port the plan gives the endpoint (not the container's 8080)


@pytest.fixture(scope="module")
def client(engine: str) -> Iterator[Any]:
    c = docker.DockerClient(base_url=engine, timeout=30)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def image(client: Any) -> str:
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        build_image(client)
    return IMAGE


@pytest.fixture
async def runtime(engine: str, tmp_path: Path) -> AsyncIterator[ContainerRuntime]:
    rt = ContainerRuntime()
    rt.configure(NodeSettings(home=tmp_path / "home", docker_host=engine))
    try:
        yield rt
    finally:
        await rt.close()
        await rt.close()  # idempotent


def make_spec(root: Path, tmp_path: Path, *, port: int = PUBLISHED) -> LaunchSpec:
    manifest = load_manifest(root)
    env = manifest.environment(None)
    env_id = f"{manifest.name}.{env.name}"
    ports = {"http": port}
    cap = Capacity(cpus=os.cpu_count() or 1, memory_free=8 * GiB, disk_free=100 * GiB)
    return LaunchSpec(
        env_id=env_id,
        workspace=manifest.name,
        environment=env,
        root=root,
        ports=ports,
        log_path=tmp_path / "logs" / f"{env_id}.log",
        env={
            "AIENV_WORKSPACE": manifest.name,
            "AIENV_ENVIRONMENT": env.name,
            "AIENV_PORT_HTTP": str(port),
        },
        plan=make_plan(env, cap, ports=ports),
        state_dir=tmp_path / "state",
        node_id=NODE,
    )


async def fetch(url: str, timeout: float = 15.0) -> httpx.Response:
    """GET ``url`` as soon as it answers."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
        while True:
            try:
                response = await http.get(url)
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer in {timeout:g} s")
            await asyncio.sleep(0.05)


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def wait_for_log(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = await asyncio.to_thread(read, path)
        if text in content:
            return content
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {content!r}")


def gone(client: Any, ident: str) -> bool:
    try:
        client.containers.get(ident)
    except docker.errors.NotFound:
        return True
    return False


async def test_launch_loads_the_carried_image_and_runs_with_the_plan(
    runtime: ContainerRuntime,
    engine: str,
    client: Any,
    image: str,
    lan: Lan,
    tmp_path: Path,
    record_property: Any,
) -> None:
    root = write_workspace(tmp_path / "ws")
    written = await save_image(engine, image, root / "images" / "www.tar")
    assert written == (root / "images" / "www.tar").stat().st_size > 1_000_000
    assert [p.name for p in (root / "images").iterdir()] == ["www.tar"]  # no part file left
    client.images.remove(image, force=True)
    spec = make_spec(root, tmp_path)

    started = time.monotonic()
    handle = await runtime.launch(spec)
    launched = time.monotonic() - started
    waiter = asyncio.create_task(runtime.wait(handle))
    base = f"http://{lan.hosts[0].ip}:{PUBLISHED}"
    page = await fetch(f"{base}/")
    answered = time.monotonic() - started
    record_property("launch_seconds", round(launched, 3))
    record_property("launch_to_answer_seconds", round(answered, 3))
    print(f"launch (with image load) {launched:.3f} s, endpoint answering {answered:.3f} s")

    assert page.text == PAGE
    assert (await fetch(f"{base}/data/hello.txt")).text == DATA  # the mounted workspace folder
    client.images.get(image)  # loaded from the archive
    assert handle["name"] == container_name(spec.env_id) == "aienv-web.www"
    assert await runtime.is_running(handle)
    assert runtime.details(handle) == {
        "container": handle["container"][:12],
        "name": "aienv-web.www",
        "image": image,
    }

    attrs = client.api.inspect_container(handle["container"])
    host = attrs["HostConfig"]
    assert spec.plan.cpus == 1.0 and spec.plan.memory == 64 * MiB
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == 64 * MiB
    assert host["MemorySwap"] == 64 * MiB
    assert host["Init"] is True
    assert host["PortBindings"] == {f"{PORT}/tcp": [{"HostIp": "", "HostPort": str(PUBLISHED)}]}
    assert attrs["Config"]["Labels"]["aienv.env"] == "web.www"
    assert attrs["Config"]["Labels"]["aienv.node"] == NODE
    [mount] = attrs["Mounts"]
    source = str((root / "data").resolve())
    assert (mount["Source"], mount["Destination"], mount["RW"]) == (source, "/data", False)
    # the kernel holds the container to the plan
    container = client.containers.get(handle["container"])
    v1 = "memory/memory.limit_in_bytes cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us"
    show = f"cd /sys/fs/cgroup && (cat {v1} 2>/dev/null || cat memory.max cpu.max)"
    code, out = container.exec_run(["/bin/sh", "-c", show])
    assert code == 0, out
    limits = out.decode().split()
    assert limits[0] == str(64 * MiB)
    assert int(limits[1]) == int(limits[2])  # quota = period: one CPU

    # {port.http} and AIENV_PORT_HTTP are the container's port; the output reaches the log
    await wait_for_log(spec.log_path, "started greeting=hello port=8080 ws=web")
    await wait_for_log(spec.log_path, "response:200")  # the server's own lines (stderr)

    stopping = time.monotonic()
    await runtime.stop(handle, timeout=10)
    assert time.monotonic() - stopping < 5  # SIGTERM reached the server (docker-init)
    assert gone(client, handle["container"])
    assert not await runtime.is_running(handle)
    assert await asyncio.wait_for(waiter, 10) is not None
    await runtime.stop(handle, timeout=10)  # again: nothing left to do
    await runtime.remove(handle)
    assert await runtime.wait(handle) is None


async def test_a_terminal_is_a_shell_in_the_running_container(
    runtime: ContainerRuntime, image: str, tmp_path: Path
) -> None:
    """``aienv shell`` and the page's terminal on a container: docker exec with a TTY,
    the environment's variables, its mounts, its window size, the shell's exit code."""
    root = write_workspace(tmp_path / "ws")
    spec = make_spec(root, tmp_path)
    spec = dataclasses.replace(spec, env={**spec.env, "MARK": "held-here"})
    handle = await runtime.launch(spec)
    try:
        term = await runtime.terminal(spec, handle)
        await term.resize(120, 40)
        await term.write(b"echo in:$MARK:$(cat /data/hello.txt); stty size; exit 5\n")
        out = b""
        while chunk := await asyncio.wait_for(term.read(), 20):
            out += chunk
        text = out.decode(errors="replace")
        assert f"in:held-here:{DATA.strip()}" in text, text
        assert "40 120" in text, text  # rows and columns, as resized
        assert term.exit_code == 5
        await term.close()
    finally:
        await runtime.stop(handle, 5)


async def test_an_image_neither_here_nor_carried_is_refused(
    runtime: ContainerRuntime, client: Any, tmp_path: Path
) -> None:
    root = write_workspace(tmp_path / "ws", image="aienv-test/absent:1", archive=None)
    refused = r"image aienv-test/absent:1 is not on this machine and the workspace carries no"
    with pytest.raises(RuntimeFailure, match=refused):
        await runtime.launch(make_spec(root, tmp_path))

    root = write_workspace(tmp_path / "ws2", image="aienv-test/absent:1")
    with pytest.raises(RuntimeFailure, match=r"no image archive \(images/www.tar is missing\)"):
        await runtime.launch(make_spec(root, tmp_path))
    assert client.containers.list(all=True) == []


async def test_an_archive_without_the_image_is_refused(
    runtime: ContainerRuntime, engine: str, image: str, tmp_path: Path
) -> None:
    root = write_workspace(tmp_path / "ws", image="aienv-test/other:2")
    await save_image(engine, image, root / "images" / "www.tar")
    with pytest.raises(
        RuntimeFailure, match=r"does not hold image aienv-test/other:2 \(it holds: "
    ):
        await runtime.launch(make_spec(root, tmp_path))


async def test_an_application_that_ends_leaves_its_code_log_and_no_container(
    runtime: ContainerRuntime, client: Any, image: str, tmp_path: Path
) -> None:
    root = write_workspace(tmp_path / "ws", command=["/bin/sh", "-c", "echo bye >&2; exit 3"])
    spec = make_spec(root, tmp_path)
    handle = await runtime.launch(spec)
    assert await asyncio.wait_for(runtime.wait(handle), 15) == 3
    assert "bye" in spec.log_path.read_text()  # stderr, complete when the wait returns
    assert gone(client, handle["container"])


async def test_every_stop_returns_once_the_container_is_gone(
    runtime: ContainerRuntime, client: Any, image: str, tmp_path: Path
) -> None:
    """Stops racing each other and the end of the application (whose waiter removes
    the container too): the engine refuses all but one removal as "already in
    progress", and each of those still returns only when the container is gone."""
    root = write_workspace(tmp_path / "ws")
    for _ in range(3):
        handle = await runtime.launch(make_spec(root, tmp_path))
        waiter = asyncio.create_task(runtime.wait(handle))

        async def stop_then_look(handle: dict[str, Any] = handle) -> bool:
            await runtime.stop(handle, timeout=5)
            return gone(client, handle["container"])

        assert await asyncio.gather(*(stop_then_look() for _ in range(4))) == [True] * 4
        await asyncio.wait_for(waiter, 15)


async def test_a_left_over_container_is_replaced_a_foreign_one_refused(
    runtime: ContainerRuntime, client: Any, image: str, tmp_path: Path
) -> None:
    root = write_workspace(tmp_path / "ws")
    spec = make_spec(root, tmp_path)
    first = await runtime.launch(spec)  # then the node "forgets" it
    second = await runtime.launch(spec)
    assert first["container"] != second["container"]
    assert gone(client, first["container"]) and await runtime.is_running(second)
    await runtime.stop(second, timeout=5)

    foreign = client.containers.create(image, name="aienv-web.www")
    try:
        with pytest.raises(RuntimeFailure, match=r"does not belong to environment web\.www"):
            await runtime.launch(spec)
        client.containers.get(foreign.id)  # untouched
    finally:
        foreign.remove(force=True)


async def test_save_image_refuses_an_image_that_is_not_here(engine: str, tmp_path: Path) -> None:
    dest = tmp_path / "images" / "x.tar"
    with pytest.raises(RuntimeFailure, match="image aienv-test/absent:1 is not on this machine"):
        await save_image(engine, "aienv-test/absent:1", dest)
    assert not dest.exists()


async def test_no_engine_is_reported_not_raised(tmp_path: Path, engine: str) -> None:
    missing = f"unix://{tmp_path}/no-such.sock"
    rt = ContainerRuntime()
    rt.configure(NodeSettings(home=tmp_path / "home", docker_host=missing))
    ok, why = await rt.available()
    assert not ok
    assert why == (
        f"no Docker engine at {missing}: its socket does not exist; "
        "start dockerd or set AIENV_DOCKER_HOST"
    )
    root = write_workspace(tmp_path / "ws")
    with pytest.raises(RuntimeFailure, match=f"no Docker engine at {missing}"):
        await rt.launch(make_spec(root, tmp_path))
    with pytest.raises(RuntimeFailure, match="no Docker engine"):
        await save_image(missing, IMAGE, tmp_path / "x.tar")
    await rt.close()

    there = ContainerRuntime()
    there.configure(NodeSettings(home=tmp_path / "home", docker_host=engine))
    assert await there.available() == (True, "")
    await there.close()


async def test_check_names_what_is_missing(tmp_path: Path) -> None:
    root = write_workspace(tmp_path / "ws")
    env = load_manifest(root).environment(None)
    await ContainerRuntime().check(env, root)  # the archive may be missing: the image may be here
    (root / "data" / "hello.txt").unlink()
    (root / "data").rmdir()
    with pytest.raises(RuntimeFailure, match="mounts 'data', which does not exist"):
        await ContainerRuntime().check(env, root)
    (root / "data").symlink_to(tmp_path)
    with pytest.raises(RuntimeFailure, match="leads outside the workspace"):
        await ContainerRuntime().check(env, root)


def test_gpus_are_requested_from_the_engine(tmp_path: Path) -> None:
    root = write_workspace(tmp_path / "ws")
    spec = make_spec(root, tmp_path)
    gpus = (Gpu(0, "A", 8 * GiB), Gpu(1, "B", 8 * GiB))
    cap = Capacity(cpus=2, memory_free=8 * GiB, disk_free=100 * GiB, gpus=gpus)
    wants = spec.environment.recommends.model_copy(update={"gpu": "optional"})
    env = spec.environment.model_copy(update={"recommends": wants})
    plan = make_plan(env, cap, ports=spec.ports)
    options = create_options(dataclasses.replace(spec, plan=plan), IMAGE, "aienv-web.www")
    [request] = options["device_requests"]
    assert request["DeviceIDs"] == ["0", "1"]
    assert request["Capabilities"] == [["gpu"]]
    no_gpu = create_options(spec, IMAGE, "aienv-web.www")
    assert "device_requests" not in no_gpu


def test_env_references_in_the_command_come_from_the_container_env(tmp_path: Path) -> None:
    """A captured container's command says ``{env.NAME}`` where a secret was: the value
    the user fills under ``container.env`` goes in; one not filled stops the launch."""
    root = write_workspace(tmp_path / "ws")
    spec = make_spec(root, tmp_path)
    block = spec.environment.container
    assert block is not None
    command = ["httpd", "--api-key", "{env.API_KEY}", "-p", "{port.http}"]
    filled = block.model_copy(update={"command": command, "env": {"API_KEY": "sk-1"}})
    env = spec.environment.model_copy(update={"container": filled})
    options = create_options(dataclasses.replace(spec, environment=env), IMAGE, "aienv-web.www")
    assert options["command"] == ["httpd", "--api-key", "sk-1", "-p", str(PORT)]
    unfilled = env.model_copy(update={"container": block.model_copy(update={"command": command})})
    with pytest.raises(RuntimeFailure, match="variable API_KEY"):
        create_options(dataclasses.replace(spec, environment=unfilled), IMAGE, "aienv-web.www")


async def test_a_container_runs_hardened_without_new_privileges_or_spare_capabilities(
    engine: str, client: Any, image: str, tmp_path: Path
) -> None:
    """A hostile container: no privilege gain, no raw sockets or device nodes, its process
    count capped, the workspace's read-only mount kept read-only."""
    rt = ContainerRuntime()
    rt.configure(NodeSettings(home=tmp_path / "home", docker_host=engine, pids_limit=32))
    script = (
        "grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status; "
        "if mknod /tmp/mem c 1 1 2>/dev/null; then echo mknod=made; else echo mknod=refused; fi; "
        "if echo x > /data/planted 2>/dev/null; then echo data=written; "
        "else echo data=refused; fi; "
        # a fork bomb in a subshell: the shell that cannot fork any more ends, not this one
        "(i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; "
        "set -- /proc/[0-9]*; echo processes=$#; exit 0"  # a glob: no fork needed
    )
    root = write_workspace(tmp_path / "ws", command=["/bin/sh", "-c", script])
    spec = make_spec(root, tmp_path)
    try:
        handle = await rt.launch(spec)
        code = await asyncio.wait_for(rt.wait(handle), 30)
    finally:
        await rt.close()
    log = spec.log_path.read_text()
    assert code == 0, log
    status = dict(line.split(":\t") for line in log.splitlines() if ":\t" in line)
    assert status["NoNewPrivs"] == "1", log
    bounding = int(status["CapBnd"], 16)
    for bit, name in ((13, "NET_RAW"), (27, "MKNOD"), (18, "SYS_CHROOT"), (31, "SETFCAP")):
        assert not bounding & (1 << bit), f"{name} is still in the bounding set:\n{log}"
    assert bounding & (1 << 0), log  # CHOWN stays: an entrypoint may need it
    assert "mknod=refused" in log and "data=refused" in log, log
    processes = int(log.split("processes=")[1].split()[0])
    assert processes <= 32, log
    assert not (root / "data" / "planted").exists()
