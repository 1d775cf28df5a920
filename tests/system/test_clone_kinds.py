"""A workspace of each kind (process, container, VM) shared by one namespace node,
cloned by another and launched there with a plan that fits the receiving
machine, against real engines. Each test records the time from the clone's
start to the endpoint answering."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.conftest import HELLO, shared_by, wait_for
from tests.lan import Host, Lan, admin_call, open_to_others
from tests.system.container_image import IMAGE, PAGE, build_image
from tests.system.container_image import write_workspace as write_container_workspace
from tests.system.libvirt_daemon import libvirt_daemon
from tests.system.vm_image import build_vm_workspace

pytestmark = [pytest.mark.system]

HOSTS = 2

MiB = 1024**2
Record = Callable[[str, object], None]


@pytest.fixture(scope="module")
def libvirt(lan: Lan) -> Iterator[str]:
    """libvirtd in the cloning node's namespace: its VMs' forwarded ports live there."""
    with libvirt_daemon(lan.hosts[1].ns) as uri:
        yield uri


@pytest.fixture(scope="module")
def nodes(lan: Lan, engine: str, libvirt: str) -> Iterator[tuple[Host, Host]]:
    a, b = lan.hosts
    for host in (a, b):
        host.extra_env = {"AIENV_DOCKER_HOST": engine, "AIENV_LIBVIRT_URI": libvirt}
    a.start("alpha")
    b.start("beta")
    with open_to_others(b.home):  # beta's VMs: qemu runs as libvirt's account, never root
        yield a, b


def clone_and_answer(
    b: Host, source: str, check: Callable[[str], bool], path: str = ""
) -> tuple[float, dict[str, Any]]:
    """Clone ``source`` on ``b`` (download, verify, plan, launch); return the seconds from
    the clone's start until its endpoint answered, and the environment."""
    start = time.monotonic()
    res = b.cli("clone", source, timeout=300)
    assert "running" in res.stdout, res.stdout + res.stderr
    _, envs = admin_call(b, "GET", "/environments")
    (env,) = [e for e in envs["environments"] if e["workspace"] == source.split("/")[1]]  # type: ignore[index]
    url = env["endpoints"][0]["url"] + path
    while True:
        page = b.run("curl", "-sf", "--max-time", "2", url)
        if page.returncode == 0 and check(page.stdout):
            return time.monotonic() - start, env
        assert time.monotonic() - start < 120, f"{url} never answered: {page}"
        time.sleep(0.1)


def test_process_workspace(nodes: tuple[Host, Host], record_property: Record) -> None:
    a, b = nodes
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5, "beta sees alpha/hello")
    took, env = clone_and_answer(b, "alpha/hello", lambda text: "Hello from aienv" in text)
    record_property("timing: process clone to endpoint answering", took)
    assert env["runtime"] == "process" and env["plan"]["fit"] in ("fits", "fits with less")
    b.cli("stop", "hello")


def test_container_workspace(
    nodes: tuple[Host, Host], engine: str, tmp_path: Path, record_property: Record
) -> None:
    a, b = nodes
    client = docker.DockerClient(base_url=engine, timeout=60)
    try:
        build_image(client)
        folder = write_container_workspace(tmp_path / "web", name="web")
        assert not (folder / "images" / "www.tar").exists()
        a.cli("create", "web", "--from", str(folder))
        shared = a.cli("share", "web")
        assert "added images/www.tar" in shared.stdout  # the local image, carried along
        wait_for(lambda: "web" in shared_by(b, "alpha"), 5, "beta sees alpha/web")
        client.images.remove(IMAGE, force=True)  # the clone must load it from the archive
        took, env = clone_and_answer(b, "alpha/web", lambda text: text == PAGE)
        record_property("timing: container clone to endpoint answering", took)
        plan = env["plan"]
        container = client.containers.get(env["handle"]["container"])
        host_config = container.attrs["HostConfig"]
        assert host_config["NanoCpus"] == int(plan["cpus"] * 1e9)
        assert host_config["Memory"] == plan["memory"]
        assert client.images.get(IMAGE)  # loaded from the workspace's archive
        ps = json.loads(b.cli("ps", "--json").stdout)
        assert [e["details"]["image"] for e in ps if e["id"] == "web.www"] == [IMAGE]
        b.cli("stop", "web")
        assert not client.containers.list(all=True, filters={"label": "aienv.env=web.www"})
    finally:
        client.close()


def test_vm_workspace(nodes: tuple[Host, Host], tmp_path: Path, record_property: Record) -> None:
    a, b = nodes
    image = build_vm_workspace(tmp_path / "vm", name="vmbox")
    pristine = hashlib.sha256(image.disk.read_bytes()).hexdigest()
    a.cli("create", "vmbox", "--from", str(image.root))
    a.cli("share", "vmbox")
    wait_for(lambda: "vmbox" in shared_by(b, "alpha"), 5, "beta sees alpha/vmbox")
    took, env = clone_and_answer(b, "alpha/vmbox", lambda text: "cpus=" in text, "cgi-bin/info")
    record_property("timing: vm clone to endpoint answering", took)
    plan = env["plan"]
    assert plan["accel"] in ("kvm", "tcg") and plan["memory"] == 256 * MiB
    info = b.run("curl", "-sf", env["endpoints"][0]["url"] + "cgi-bin/info").stdout
    assert f"cpus={math.ceil(plan['cpus'])}" in info  # the guest got the planned vCPUs
    assert "aienv-vm-ready" in b.cli("logs", "vmbox").stdout  # the serial console
    # a snapshot round trip through the CLI, then the cloned image is still pristine
    b.cli("snapshot", "create", "vmbox.web", "first")
    assert "first" in b.cli("snapshot", "list", "vmbox.web").stdout
    b.cli("snapshot", "delete", "vmbox.web", "first")
    b.cli("stop", "vmbox")
    cloned = b.home / "workspaces" / "vmbox" / "vm" / "data.qcow2"
    assert hashlib.sha256(cloned.read_bytes()).hexdigest() == pristine
