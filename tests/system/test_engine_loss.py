"""Engines that go away and come back, and a node killed during a container launch.

One node in a namespace, with a dockerd and a libvirtd of the test's own in the
same namespace (``tests/system/docker_daemon.py``, ``libvirt_daemon.py``), each
stopped and started again at the same address while the node runs on:

- the node stays up and says clearly that the engine is missing (a launch or a
  plan fails with a message naming it, exit code 1, no traceback), its state
  stays as it was, and once the engine is back it is usable again without a
  node restart;
- a node killed with SIGKILL while a container gets ready, or just after the
  engine started the container (``stalled_node.py``), adopts that container
  after its restart, exactly once, or records it stopped with none running:
  ``docker ps`` never shows two, nor one the node does not know.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.integration.conftest import wait_for
from tests.integration.faults import (
    cut_off,
    environments,
    launch_in_background,
    start_stalled,
    starting_with_handle,
)
from tests.lan import Host, Lan
from tests.system.container_image import IMAGE, PAGE, build_image, write_workspace
from tests.system.docker_daemon import _Daemon, running_docker_daemon
from tests.system.libvirt_daemon import LibvirtDaemon, running_daemon

pytestmark = [pytest.mark.system]

HOSTS = 1

SLOW_HTTPD = ["/bin/sh", "-c", "sleep 4; exec /bin/busybox httpd -f -p {port.http} -h /www"]
VM_WORKSPACE = """apiVersion: aienv/v1
name: box
environments:
  - name: web
    runtime: vm
    recommends: {cpus: 1, memory: 128MiB}
    vm: {kernel: vm/vmlinuz, disk: vm/disk.img}
    endpoints:
      - name: http
        port: 80
"""


@pytest.fixture(scope="module")
def dockerd(lan: Lan) -> Iterator[_Daemon]:
    with running_docker_daemon(lan.hosts[0].ns) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def client(dockerd: _Daemon) -> Iterator[Any]:
    """A client of the test's own (a new connection for every call, so it outlives a
    restart of the engine)."""
    c = docker.DockerClient(base_url=dockerd.address, timeout=30)
    try:
        if not c.images.list(name=IMAGE):
            build_image(c)
        yield c
    finally:
        c.close()


@pytest.fixture
def node(lan: Lan, dockerd: _Daemon, tmp_path: Path) -> Iterator[Host]:
    """The node, told where both engines are (libvirtd's socket may not exist yet); after
    the test it is stopped and its home emptied, and the engine holds no container."""
    host = lan.hosts[0]
    sock = tmp_path / "libvirt-sock"  # replaced by the test that starts a libvirtd
    host.extra_env = {
        "AIENV_DOCKER_HOST": dockerd.address,
        "AIENV_LIBVIRT_URI": f"qemu:///system?socket={sock}",
    }
    yield host
    host.reset()
    if dockerd.proc is None:  # a test that failed with the engine away
        dockerd.start()
    dockerd.remove_containers()


def ours(client: Any, env_id: str, *, all_: bool = False) -> list[str]:
    """The ids of the containers of environment ``env_id`` (running ones, or all)."""
    found = client.containers.list(all=all_, filters={"label": f"aienv.env={env_id}"})
    return [c.id for c in found]


def answers(host: Host, env: dict[str, Any]) -> bool:
    page = host.run("curl", "-sf", "--max-time", "2", env["endpoints"][0]["url"])
    return page.returncode == 0 and page.stdout == PAGE


def one_running(host: Host, client: Any, workspace: str) -> dict[str, Any]:
    """The environment runs, as the only container of its kind, and answers."""
    (env,) = [e for e in environments(host) if e["workspace"] == workspace]
    assert env["state"] == "running", env
    assert ours(client, env["id"]) == [env["handle"]["container"]]
    wait_for(lambda: answers(host, env), 15.0, f"{workspace} answers")
    return env


def launch_again_and_stop(host: Host, client: Any, workspace: str) -> None:
    """A launch after the restart never makes a second container; the stop leaves none."""
    res = host.cli("launch", workspace, check=False)
    assert res.returncode in (0, 5), res.stdout + res.stderr
    one_running(host, client, workspace)
    host.cli("stop", workspace)
    assert ours(client, f"{workspace}.www", all_=True) == []


# -- the node killed during a container launch ----------------------------------------


def test_killed_while_the_container_gets_ready(node: Host, client: Any, tmp_path: Path) -> None:
    node.start("engines")
    folder = write_workspace(tmp_path / "slow", name="slow", archive=None, command=SLOW_HTTPD)
    node.cli("create", "slow", "--from", str(folder))
    launch = launch_in_background(node, "slow")
    wait_for(
        lambda: starting_with_handle(node, "slow.www") and ours(client, "slow.www"),
        20.0,
        "the launch waits for the endpoint of a running container, recorded",
    )
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    cut_off(launch)
    (container,) = ours(client, "slow.www")  # it runs on without its node

    node.start("engines")
    env = one_running(node, client, "slow")
    assert env["handle"]["container"] == container  # adopted, not lost
    launch_again_and_stop(node, client, "slow")


def test_killed_just_after_the_container_started(node: Host, client: Any, tmp_path: Path) -> None:
    mark = tmp_path / "started"
    start_stalled(node, "container-start", mark, "engines")
    folder = write_workspace(tmp_path / "quick", name="quick", archive=None)
    node.cli("create", "quick", "--from", str(folder))
    launch = launch_in_background(node, "quick")
    wait_for(lambda: mark.exists() and mark.read_text(), 20.0, "the node stalls in the launch")
    started = mark.read_text()
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    cut_off(launch)
    assert ours(client, "quick.www") == [started]

    node.start("engines")
    (env,) = environments(node)
    if env["state"] == "running":  # adopted: the container the engine started, only it
        assert env["handle"]["container"] == started
        one_running(node, client, "quick")
    else:  # or recorded stopped, and then nothing of it may run
        assert env["state"] in ("stopped", "failed"), env
        assert ours(client, "quick.www") == []
    launch_again_and_stop(node, client, "quick")


# -- engines that go away and come back ---------------------------------------------


def test_docker_engine_goes_away_and_comes_back(
    node: Host, dockerd: _Daemon, client: Any, tmp_path: Path
) -> None:
    node.start("engines")
    node.cli("create", "web", "--from", str(write_workspace(tmp_path / "web", archive=None)))
    node.cli("create", "hello", "--template", "hello-web")
    node.cli("launch", "web")
    (env,) = environments(node)
    wait_for(lambda: answers(node, env), 15.0, "web answers")

    dockerd.stop()
    # the node lives on; the environment is no longer running, and says why
    assert node.api("/node").status_code == 200
    wait_for(
        lambda: environments(node)[0]["state"] in ("stopped", "failed"),
        15.0,
        "the node notices that the container is gone",
    )
    res = node.cli("launch", "web", check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    message = " ".join(res.stderr.split())
    assert "no Docker engine at" in message and "start dockerd" in message
    assert "Traceback" not in res.stderr + res.stdout
    # the rest of the node still answers, its state as it was
    (env,) = environments(node)
    assert env["id"] == "web.www" and env["error"], env
    listed = {ws["name"] for ws in json.loads(node.cli("list", "--json").stdout)}
    assert listed == {"web", "hello"}
    node.cli("launch", "hello")  # another runtime is not held up
    node.cli("stop", "hello")

    dockerd.start()
    node.cli("launch", "web")  # usable again, with no node restart
    env = one_running(node, client, "web")
    node.cli("stop", "web")
    assert ours(client, "web.www", all_=True) == []
    assert "Traceback" not in node.log()  # and nothing went wrong inside the node


@pytest.fixture
def libvirtd(lan: Lan) -> Iterator[LibvirtDaemon]:
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed")
    with running_daemon(lan.hosts[0].ns) as daemon:
        yield daemon


def test_libvirtd_goes_away_and_comes_back(
    node: Host, libvirtd: LibvirtDaemon, tmp_path: Path
) -> None:
    node.extra_env["AIENV_LIBVIRT_URI"] = libvirtd.uri
    node.start("engines")
    folder = tmp_path / "box"
    (folder / "vm").mkdir(parents=True)
    (folder / "workspace.yaml").write_text(VM_WORKSPACE)
    (folder / "vm" / "vmlinuz").write_bytes(b"not booted: a plan does not read it")
    (folder / "vm" / "disk.img").write_bytes(bytes(65536))
    node.cli("create", "box", "--from", str(folder))
    assert json.loads(node.cli("plan", "box", "--json").stdout)["runtime"] == "vm"

    libvirtd.halt()
    assert node.api("/node").status_code == 200
    for command in (("plan", "box"), ("launch", "box")):
        res = node.cli(*command, check=False)
        assert res.returncode == 1, res.stdout + res.stderr
        message = " ".join(res.stderr.split())
        assert f"libvirt is not reachable at {libvirtd.uri}" in message, message
        assert "is libvirtd running?" in message and "Traceback" not in res.stderr
    assert environments(node) == []  # a launch refused before its plan records nothing
    assert {ws["name"] for ws in json.loads(node.cli("list", "--json").stdout)} == {"box"}

    libvirtd.start()
    plan = json.loads(node.cli("plan", "box", "--json").stdout)  # no node restart
    assert plan["runtime"] == "vm" and plan["memory"] == 128 * 1024**2
