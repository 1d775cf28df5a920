"""The VM runtime against a real libvirtd and qemu, booting a busybox guest.

The module runs its VMs under KVM when this machine can boot an ordinary guest
kernel with it, else under TCG (``ACCEL``); one test boots under TCG on purpose.
The runtime is driven directly, with a plan made by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import libvirt
import psutil
import pytest

from aienv.config import NodeSettings
from aienv.errors import Conflict, InvalidInput, NotFound, RuntimeFailure
from aienv.runtime.base import LaunchSpec
from aienv.runtime.ports import free_port
from aienv.runtime.terminal import Terminal
from aienv.runtime.vm import VmRuntime
from aienv.runtime.vm_disk import OVERLAY, base_format
from aienv.runtime.vm_domain import domain_name
from aienv.system.inventory import Capacity, kvm_is_pvm_only, kvm_status
from aienv.system.plan import make_plan
from aienv.workspace.manifest import Environment
from aienv.workspace.manifest_file import load_manifest
from tests.system.libvirt_daemon import LibvirtDaemon, running_daemon
from tests.system.vm_image import READY_MARKER, VmImage, build_vm_workspace

ACCEL = "kvm" if kvm_status()[0] and not kvm_is_pvm_only() else "tcg"
BOOT_TIMEOUT = 60.0 if ACCEL == "kvm" else 120.0
MiB = 1024**2

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("libvirtd") is None, reason="libvirtd is not installed"),
]


@dataclass
class Bed:
    daemon: LibvirtDaemon
    image: VmImage
    tmp: Path


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    tmp = Path(tempfile.mkdtemp(prefix="aienv-vmtest-"))
    tmp.chmod(0o711)  # as make_dirs leaves a node's home: others enter, list nothing
    (tmp / "home").mkdir()
    try:
        image = build_vm_workspace(tmp / "workspace", name="vmtest")
        (tmp / "workspace").chmod(0o700)  # as a workspace is installed: the launch opens it
        with running_daemon() as daemon:
            yield Bed(daemon, image, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def assert_confined(qemu: psutil.Process, key: Path) -> None:
    """A guest that broke out into ``qemu`` would hold no capability and could not
    read a 0600 file of the node's (``key``)."""
    status = Path(f"/proc/{qemu.pid}/status").read_text()
    assert re.search(r"^CapEff:\s*0+$", status, re.M), status
    key.write_text("the node's secret")
    key.chmod(0o600)
    reads = subprocess.run(
        ["setpriv", f"--reuid={qemu.uids().real}", f"--regid={qemu.gids().real}",
         "--clear-groups", "cat", str(key)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert reads.returncode != 0 and "Permission denied" in reads.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment(image: VmImage) -> Environment:
    return load_manifest(image.root).environment("web")


def make_runtime(bed: Bed, vm_accel: Literal["auto", "kvm", "tcg"] = "auto") -> VmRuntime:
    runtime = VmRuntime()
    runtime.configure(
        NodeSettings(home=bed.tmp / "home", libvirt_uri=bed.daemon.uri, vm_accel=vm_accel)
    )
    return runtime


def make_spec(
    bed: Bed,
    state_dir: Path,
    *,
    accel: str = ACCEL,
    previous: dict[str, Any] | None = None,
) -> LaunchSpec:
    env = environment(bed.image)
    cap = Capacity(cpus=2, memory_free=4096 * MiB, disk_free=10 * 1024 * MiB, kvm=accel == "kvm")
    plan = make_plan(
        env,
        cap,
        ports={"http": free_port()},
        defaults=VmRuntime.defaults,
        wants_accel=VmRuntime.wants_accel,
    )
    env_id = f"vmtest.{state_dir.name}"
    return LaunchSpec(
        env_id=env_id,
        workspace="vmtest",
        environment=env,
        root=bed.image.root,
        ports=plan.ports,
        log_path=state_dir.parent.parent / "logs" / f"{env_id}.log",
        env={},
        plan=plan,
        state_dir=state_dir,
        node_id="node-under-test",
        previous=previous,
    )


async def get(port: int, path: str, timeout: float = 10.0) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
        response.raise_for_status()
        return response.text


async def wait_answering(port: int, log_path: Path, timeout: float = BOOT_TIMEOUT) -> float:
    """Seconds until the guest's web server answers through the forwarded port."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if "cpus=" in await get(port, "/cgi-bin/info", timeout=2.0):
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"the guest did not answer within {timeout:g} s; console:\n{console(log_path)[-2000:]}"
    )


async def read_until(term: Terminal, wanted: bytes, timeout: float = 20.0) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while wanted not in seen:
            data = await term.read()
            assert data, f"the console ended before {wanted!r}; it showed {seen[-500:]!r}"
            seen += data
    return seen


async def drain(term: Terminal) -> bytes:
    """Read until the terminal ends; what its last read returned (``b""``)."""
    while data := await term.read():
        pass
    return data


def console(log_path: Path) -> str:
    """The guest's console, and qemu's own log (for a guest that printed nothing)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else "(no log)"
    qemu_logs = sorted(Path("/var/log/libvirt/qemu").glob("aienv-*.log"), key=_mtime)
    if qemu_logs:
        text += f"\n--- {qemu_logs[-1]}:\n" + qemu_logs[-1].read_text(errors="replace")[-1500:]
    return text


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def is_file(path: Path) -> bool:
    return path.is_file()


def domain(bed: Bed, name: str) -> tuple[list[int], ET.Element]:
    conn = libvirt.open(bed.daemon.uri)
    try:
        dom = conn.lookupByName(name)
        return dom.info(), ET.fromstring(dom.XMLDesc(0))
    finally:
        conn.close()


def defined(bed: Bed) -> list[str]:
    conn = libvirt.open(bed.daemon.uri)
    try:
        return [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


# -- without a daemon --------------------------------------------------------------


async def test_unavailable_when_the_uri_points_nowhere(tmp_path: Path) -> None:
    runtime = VmRuntime()
    uri = f"qemu:///system?socket={tmp_path}/nowhere/libvirt-sock"
    runtime.configure(NodeSettings(home=tmp_path, libvirt_uri=uri))
    ok, why = await runtime.available()
    assert not ok
    assert f"libvirt is not reachable at {uri}" in why
    assert "is libvirtd running?" in why


async def test_check_names_a_missing_file_and_one_outside(tmp_path: Path) -> None:
    env = Environment.model_validate(
        {"name": "web", "runtime": "vm", "vm": {"kernel": "vm/vmlinuz", "disk": "vm/d.qcow2"}}
    )
    root = tmp_path / "workspace"
    (root / "vm").mkdir(parents=True)
    (root / "vm" / "vmlinuz").write_bytes(b"kernel")
    with pytest.raises(RuntimeFailure, match=r"disk image 'vm/d.qcow2' is not in the workspace"):
        await VmRuntime().check(env, root)
    (tmp_path / "elsewhere").write_bytes(b"disk")
    (root / "vm" / "d.qcow2").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeFailure, match="points outside the workspace"):
        await VmRuntime().check(env, root)
    (root / "vm" / "d.qcow2").unlink()
    (root / "vm" / "d.qcow2").write_bytes(b"disk")
    await VmRuntime().check(env, root)


def test_a_disk_image_with_a_backing_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"\0" * 65536)
    sneaky = tmp_path / "sneaky.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(sneaky)],
        check=True,
    )
    with pytest.raises(RuntimeFailure, match="refers to another file"):
        base_format(sneaky)
    assert base_format(secret) == "raw"


def test_domain_names_are_valid_and_distinct() -> None:
    long_id = f"{'w' * 63}.{'e' * 63}"
    name = domain_name(long_id, "node-a")
    assert len(name) <= 64 and name.startswith("aienv-w")
    assert "." not in name
    assert domain_name(long_id, "node-a") != domain_name(long_id, "node-b")
    assert domain_name("a_b.c") != domain_name("a.b_c")


# -- a real VM -----------------------------------------------------------------------


async def test_available_with_the_daemon(bed: Bed) -> None:
    runtime = make_runtime(bed)
    assert await runtime.available() == (True, "")
    await runtime.close()
    await runtime.close()


@pytest.mark.slow
@pytest.mark.timeout(360)
async def test_vm_lifecycle(bed: Bed, record_property: Callable[[str, object], None]) -> None:
    base_digest = sha256(bed.image.disk)
    runtime = make_runtime(bed)
    state_dir = bed.tmp / "environments" / "web"
    state_dir.mkdir(parents=True)
    spec = make_spec(bed, state_dir)
    port = spec.ports["http"]
    assert spec.plan.memory == 256 * MiB and spec.plan.cpus == 2

    started = time.monotonic()
    handle = await runtime.launch(spec)
    boot = await wait_answering(port, spec.log_path)
    record_property(
        f"timing: vm launch to endpoint answering ({ACCEL})", time.monotonic() - started
    )
    assert handle["accel"] == ACCEL
    assert await runtime.is_running(handle)
    assert runtime.details(handle)["domain"] == handle["domain"]

    # what the plan said is what the domain got, and what the guest sees
    info, desc = domain(bed, handle["domain"])
    assert info[1] == 256 * 1024 and info[3] == 2  # max memory in KiB, vCPUs
    assert desc.get("type") == ("kvm" if ACCEL == "kvm" else "qemu")
    # qemu runs as libvirt's own qemu account, not root, and the plan says so
    assert desc.find("seclabel[@type='static']") is None
    (qemu,) = [p for p in psutil.process_iter(["cmdline", "uids"])
               if f"guest={handle['domain']}" in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    assert qemu.info["uids"].real != 0
    assert_confined(qemu, bed.tmp / "node.key")
    allowed = runtime.confinement(spec.environment, spec.plan)
    assert "libvirt's qemu account (not root)" in allowed[0]
    assert desc.findtext("os/cmdline", "").startswith("console=ttyS0")
    guest = await get(port, "/cgi-bin/info")
    assert "cpus=2" in guest
    mem_kib = int(guest.split("MemTotal:")[1].split()[0])
    assert 128 * 1024 < mem_kib <= 256 * 1024
    assert READY_MARKER in console(spec.log_path)
    assert "hello from the aienv VM example" in await get(port, "/")

    # the terminal is the serial console, where the guest runs a shell
    term = await runtime.terminal(spec, handle)
    await term.write(b"\r")
    await read_until(term, b"vm# ")
    await term.resize(100, 30)  # a serial line has no size: nothing happens, nothing breaks
    await term.write(b"echo sum=$((6*7)) $(cat /proc/sys/kernel/hostname)\r")
    await read_until(term, b"sum=42 vm")
    again = await runtime.terminal(spec, handle)  # a reloaded page takes the console over
    assert await asyncio.wait_for(drain(term), 10) == b""
    await again.write(b"echo second=$((2+3))\r")
    await read_until(again, b"second=5")
    await again.close()
    await again.close()  # twice is fine

    # snapshots: the disk goes back with the snapshot
    assert (await get(port, "/cgi-bin/disk?write=alpha")).strip() == "alpha"
    made = await runtime.snapshot_create(handle, "first")
    assert made["name"] == "first" and made["state"] == "running"
    with pytest.raises(Conflict):
        await runtime.snapshot_create(handle, "first")
    with pytest.raises(InvalidInput):
        await runtime.snapshot_create(handle, "Not Valid")
    assert (await get(port, "/cgi-bin/disk?write=beta")).strip() == "beta"
    await runtime.snapshot_revert(handle, "first")
    assert await runtime.is_running(handle)
    assert (await get(port, "/cgi-bin/disk")).strip() == "alpha"
    with pytest.raises(NotFound):
        await runtime.snapshot_revert(handle, "nope")
    listed = await runtime.snapshot_list(handle)
    assert [s["name"] for s in listed] == ["first"]
    assert listed[0]["created"] > time.time() - 300

    # stop: politely (ACPI), the definition and the overlay stay
    waiter = asyncio.create_task(runtime.wait(handle))
    stop_began = time.monotonic()
    await runtime.stop(handle, timeout=30)
    stop_took = time.monotonic() - stop_began
    assert await asyncio.wait_for(waiter, 10) == 0
    assert stop_took < 25, "the guest ignored the ACPI power button"
    assert not await runtime.is_running(handle)
    assert handle["domain"] in defined(bed)
    overlay = Path(handle["overlay"])
    assert overlay == state_dir / OVERLAY and is_file(overlay)
    await runtime.stop(handle, timeout=1)  # twice is fine

    # a stopped VM: a disk-only snapshot; reverting to a running one brings the VM back up
    offline = await runtime.snapshot_create(handle, "offline")
    assert offline["state"] == "shutoff"
    await runtime.snapshot_revert(handle, "first")
    assert await runtime.is_running(handle)
    assert (await get(port, "/cgi-bin/disk")).strip() == "alpha"
    assert (await get(port, "/cgi-bin/disk?write=gamma")).strip() == "gamma"
    await runtime.stop(handle, timeout=30)
    assert not await runtime.is_running(handle)

    # a second run keeps the disk and the snapshots
    spec2 = make_spec(bed, state_dir, previous=handle)
    handle2 = await runtime.launch(spec2)
    assert handle2["domain"] == handle["domain"] and handle2["uuid"] == handle["uuid"]
    await wait_answering(spec2.ports["http"], spec2.log_path)
    assert (await get(spec2.ports["http"], "/cgi-bin/disk")).strip() == "gamma"
    listed = await runtime.snapshot_list(handle2)
    assert [s["name"] for s in listed] == ["first", "offline"]
    for snap in listed:
        await runtime.snapshot_delete(handle2, snap["name"])
    assert await runtime.snapshot_list(handle2) == []
    with pytest.raises(NotFound):
        await runtime.snapshot_delete(handle2, "first")

    # remove: domain and overlay gone, twice is fine; the workspace's image never changed
    await runtime.remove(handle2)
    assert handle["domain"] not in defined(bed)
    assert not is_file(overlay)
    await runtime.remove(handle2)
    assert not await runtime.is_running(handle2)
    with pytest.raises(NotFound):
        await runtime.snapshot_list(handle2)
    assert sha256(bed.image.disk) == base_digest
    await runtime.close()
    record_property(f"timing: vm boot to endpoint ({ACCEL})", boot)
    record_property(f"timing: vm ACPI stop ({ACCEL})", stop_took)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_boots_under_tcg_when_told(
    bed: Bed, record_property: Callable[[str, object], None]
) -> None:
    runtime = make_runtime(bed, vm_accel="tcg")
    state_dir = bed.tmp / "environments" / "tcg"
    state_dir.mkdir(parents=True)
    spec = make_spec(bed, state_dir, accel="kvm")  # the setting wins over the plan
    handle = await runtime.launch(spec)
    try:
        assert handle["accel"] == "tcg"
        assert domain(bed, handle["domain"])[1].get("type") == "qemu"
        took = await wait_answering(spec.ports["http"], spec.log_path, timeout=60)
        record_property("timing: vm boot to endpoint (tcg, by setting)", took)
    finally:
        await runtime.stop(handle, timeout=0)
        await runtime.remove(handle)
        await runtime.close()
    assert handle["domain"] not in defined(bed)
