"""A VM moved to another node of the group (issue 20, docs/federation.md): its disk
overlay as the guest left it and its snapshots go with it, and the copy on the old
node goes once the new one runs.

Both nodes run in one namespace (two HTTP ports, one address) because a VM's
forwarded ports live in the network namespace of the libvirtd that starts its
qemu, and only one libvirtd can run on a machine at a time."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.integration.conftest import wait_for
from tests.lan import Host, Lan, admin_call, open_to_others
from tests.system.libvirt_daemon import libvirt_daemon
from tests.system.vm_image import build_vm_workspace

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(shutil.which("libvirtd") is None, reason="libvirtd is not installed"),
]

HOSTS = 1


@pytest.fixture(scope="module")
def pair_of_nodes(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Host]]:
    first = lan.hosts[0]
    second = lan.beside(first, tmp_path_factory.mktemp("beside"), 37779)
    with libvirt_daemon(first.ns) as uri:
        for host in (first, second):
            host.extra_env = {"AIENV_LIBVIRT_URI": uri}
        first.start("alpha")
        second.start("beta")
        with open_to_others(first.home), open_to_others(second.home):
            yield [first, second]
        for host in (first, second):
            host.stop()


def uri_of(host: Host) -> str:
    return host.extra_env["AIENV_LIBVIRT_URI"]


def guest(host: Host, env: dict[str, Any], path: str) -> str:
    url = env["endpoints"][0]["url"] + path
    return host.run("curl", "-sf", "--max-time", "20", url).stdout.strip()


def test_a_vm_moves_with_its_disk_and_snapshots(pair_of_nodes: list[Host], tmp_path: Path) -> None:
    alpha, beta = pair_of_nodes
    wait_for(lambda: "alpha" in {p["name"] for p in beta.api("/peers").json()["peers"]}, 10,
             "beta sees alpha")  # fmt: skip
    code = json.loads(beta.cli("pair", "--no-wait", "--json").stdout)["code"]
    alpha.cli("pair", "beta", input=f"{code}\n")
    image = build_vm_workspace(tmp_path / "vm", name="vmbox")
    alpha.cli("create", "vmbox", "--from", str(image.root))
    env = json.loads(alpha.cli("launch", "vmbox", "--json", timeout=300).stdout)
    assert guest(alpha, env, "/cgi-bin/disk?write=snapped") == "snapped"
    alpha.cli("snapshot", "create", "vmbox.web", "first")
    assert guest(alpha, env, "/cgi-bin/disk?write=moved") == "moved"

    moved = json.loads(alpha.cli("move", "vmbox.web", "--to", "beta", "--json", timeout=600).stdout)
    assert moved["node"] == "beta"
    there = moved["environment"]
    assert there["state"] == "running"
    assert guest(beta, there, "/cgi-bin/disk") == "moved"  # the disk as the guest left it
    snaps = beta.cli("snapshot", "list", "vmbox.web").stdout
    assert "first" in snaps
    beta.cli("snapshot", "revert", "vmbox.web", "first")
    assert guest(beta, there, "/cgi-bin/disk") == "snapped"  # and the snapshot with it
    # the revert left beta's own domain defined, on beta's overlay (not alpha's config)
    _, record = admin_call(beta, "GET", "/environments/vmbox.web")
    conn = libvirt.open(uri_of(beta))
    try:
        dom = conn.lookupByName(record["details"]["domain"])  # type: ignore[index]
        assert dom.isPersistent()
        inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert str(beta.home) in inactive and str(alpha.home) not in inactive
    finally:
        conn.close()
    # the old copy is gone: its workspace, its overlay and its libvirt domain
    _, workspaces = admin_call(alpha, "GET", "/workspaces")
    assert workspaces["workspaces"] == []  # type: ignore[index]
    assert not (alpha.home / "environments" / "vmbox.web").exists()
    beta.cli("stop", "vmbox")
