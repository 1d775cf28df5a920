"""Adaptation on a real node: the inventory, the plan shown before a launch, the
process runtime's limits (cgroups), refusals, runtimes that are not available
here, snapshots where a runtime has none, and autostart after a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for
from tests.lan import Host, Lan, admin_call

pytestmark = pytest.mark.integration

MiB = 1024**2


def write_workspace(root: Path, name: str, env_yaml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text(
        f"apiVersion: aienv/v1\nname: {name}\nenvironments:\n{env_yaml}"
    )
    return root


SERVER = """  - name: web
    runtime: process
    process:
      command: ["python3", "-u", "-m", "http.server", "{port.http}"]
    endpoints:
      - name: http
        port: 8000
"""


@pytest.fixture(scope="module")
def node(lan: Lan) -> Host:
    host = lan.hosts[0]
    # no Docker engine or libvirtd is reachable from this node: both must say so
    host.extra_env = {
        "AIENV_DOCKER_HOST": f"unix://{host.home}/no-docker.sock",
        "AIENV_LIBVIRT_URI": f"qemu:///system?socket={host.home}/no-libvirt-sock",
    }
    host.start("adapt")
    return host


def test_inventory_reports_machine_and_runtimes(node: Host) -> None:
    data = json.loads(node.cli("system", "--json").stdout)
    assert data["cpu"]["logical"] >= 1 and data["memory"]["total"] > 0
    assert data["memory"]["plannable"] <= data["memory"]["available"]
    assert any(i["name"] == "eth0" and "10.77.0.1" in i["addresses"] for i in data["interfaces"])
    assert data["gpus"] == []  # no GPU is a normal answer
    assert isinstance(data["kvm"]["usable"], bool)
    rts = data["runtimes"]
    assert rts["process"] == {"available": True, "reason": ""}
    assert rts["container"]["available"] is False and "docker" in rts["container"]["reason"].lower()
    assert rts["vm"]["available"] is False and "libvirt" in rts["vm"]["reason"].lower()
    text = node.cli("system").stdout
    assert "container" in text and "no" in text
    # peers see a summary in the announcement, without host names or addresses
    remote = node.api("/system").json()
    assert "interfaces" not in remote and remote["runtimes"]["process"]["available"]


def test_plan_then_launch_with_limits(node: Host, tmp_path: Path) -> None:
    env = SERVER + "    recommends: {cpus: 0.5, memory: 96MiB}\n    requires: {memory: 64MiB}\n"
    folder = write_workspace(tmp_path / "limited", "limited", env)
    node.cli("create", "limited", "--from", str(folder))
    plan = json.loads(node.cli("plan", "limited", "--json").stdout)
    assert (plan["cpus"], plan["memory"], plan["fit"]) == (0.5, 96 * MiB, "fits")
    assert plan["threads"] == 1 and plan["ports"]["http"] >= 1
    res = node.cli("launch", "limited")
    assert "plan for web (process): fits" in res.stdout and "0.5 CPU, 96.0 MiB" in res.stdout
    status, envs = admin_call(node, "GET", "/environments")
    assert status == 200
    (e,) = [x for x in envs["environments"] if x["workspace"] == "limited"]  # type: ignore[index]
    assert e["state"] == "running" and e["plan"]["memory"] == 96 * MiB
    handle = e["handle"]
    limits = handle["limits"]
    pid = handle["pid"]
    # the limits really apply to the process: its cgroups carry them
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"OMP_NUM_THREADS=1" in environ and b"AIENV_CPUS=0.5" in environ
    assert b"CUDA_VISIBLE_DEVICES=" in environ
    if limits["kind"] == "cgroup1":
        cgroups = dict(
            (line.split(":")[1], line.split(":")[2])
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        )
        mem = Path("/sys/fs/cgroup/memory") / cgroups["memory"].lstrip("/")
        cpu_ctl = next(k for k in cgroups if "cpu" in k.split(","))
        cpu = Path("/sys/fs/cgroup/cpu") / cgroups[cpu_ctl].lstrip("/")
        assert int((mem / "memory.limit_in_bytes").read_text()) == 96 * MiB
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50_000
    elif limits["kind"] == "cgroup2":
        rel = Path(f"/proc/{pid}/cgroup").read_text().strip().split("::")[1]
        group = Path("/sys/fs/cgroup") / rel.lstrip("/")
        assert int((group / "memory.max").read_text()) == 96 * MiB
        assert (group / "cpu.max").read_text().split() == ["50000", "100000"]
    else:  # no writable cgroups here: memory is not limited, and the plan said so
        assert limits["kind"] == "rlimit" and limits["unenforced"] == ["memory"]
        assert "its memory is not limited" in res.stdout
    ps = node.cli("ps").stdout
    assert "limited.web" in ps and "0.5 CPU, 96.0 MiB" in ps
    node.cli("stop", "limited")
    groups = [Path(g) for g in limits["groups"]]
    wait_for(lambda: not any(g.exists() for g in groups), 5, "the cgroups are removed")


def test_refusal_names_shortfall_and_force_overrides(node: Host, tmp_path: Path) -> None:
    env = SERVER + "    requires: {memory: 100TiB, gpu: required}\n"
    node.cli("create", "huge", "--from", str(write_workspace(tmp_path / "huge", "huge", env)))
    res = node.cli("launch", "huge", check=False)
    assert res.returncode == 5, res
    assert "does not fit this machine" in res.stderr and "100.0 TiB" in res.stderr
    assert "needs a GPU" in res.stderr and "--force" in res.stderr
    assert "Traceback" not in res.stderr
    status, envs = admin_call(node, "GET", "/environments")
    assert not [x for x in envs["environments"] if x["workspace"] == "huge"]  # type: ignore[index]
    status, body = admin_call(node, "GET", "/workspaces/huge/plan")
    assert status == 409 and body["error"]["code"] == "does_not_fit"  # type: ignore[index]
    assert body["plan"]["fit"] == "does not fit"  # type: ignore[index]
    forced = node.cli("launch", "huge", "--force")
    assert "forced to launch although it does not fit" in forced.stdout
    node.cli("stop", "huge")


def test_unavailable_runtimes_give_clear_launch_errors(node: Host, tmp_path: Path) -> None:
    container = """  - name: box
    runtime: container
    container: {image: "nothing:1"}
"""
    vm = """  - name: machine
    runtime: vm
    vm: {disk: disk.img}
"""
    plugin = """  - name: other
    runtime: teleport
    options: {speed: warp}
"""
    folder = write_workspace(tmp_path / "kinds", "kinds", container + vm + plugin)
    (folder / "disk.img").write_bytes(b"\0" * 4096)
    node.cli("create", "kinds", "--from", str(folder))
    for env, words in (
        ("box", "no docker engine"),
        ("machine", "libvirt"),
        ("other", "no such runtime is installed"),
    ):
        res = node.cli("launch", "kinds", env, check=False)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert f"runtime '{env_runtime(env)}' is not available on this node" in res.stderr
        assert words in res.stderr.lower()


def env_runtime(env: str) -> str:
    return {"box": "container", "machine": "vm", "other": "teleport"}[env]


def test_snapshots_on_a_process_say_unsupported(node: Host, tmp_path: Path) -> None:
    node.cli("create", "snap", "--from", str(write_workspace(tmp_path / "s", "snap", SERVER)))
    node.cli("launch", "snap")
    res = node.cli("snapshot", "create", "snap.web", "first", check=False)
    assert res.returncode == 5 and "the process runtime has no snapshots" in res.stderr
    res = node.cli("snapshot", "create", "snap.web", "../bad", check=False)
    assert res.returncode != 0 and "snapshot name" in res.stderr
    node.cli("stop", "snap")


def test_autostart_after_restart(node: Host, tmp_path: Path) -> None:
    env = SERVER + "    autostart: true\n"
    node.cli("create", "auto", "--from", str(write_workspace(tmp_path / "a", "auto", env)))
    node.stop()
    node.start("adapt")

    def running() -> bool:
        _, envs = admin_call(node, "GET", "/environments")
        docs = [x for x in envs["environments"] if x["id"] == "auto.web"]  # type: ignore[index]
        return bool(docs) and docs[0]["state"] == "running"

    wait_for(running, 20, "the autostart environment runs after the node starts")
    node.cli("stop", "auto")
