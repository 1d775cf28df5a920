"""What an idle node loads: the Docker SDK and libvirt's binding (~19 MiB together)
only once an engine or a daemon is there to use them."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import asyncio, sys
from aienv.dockerengine.client import Engine
from aienv.runtime import libvirt_binding, vm
from aienv.runtime.container import ContainerRuntime
from aienv.system.containers import Containers

vm.SYSTEM_SOCKETS = ("/nonexistent/libvirt-sock",)
runtime = vm.VmRuntime()
runtime.uri = "qemu:///system"
print(runtime._available())
print(Engine("unix:///nonexistent/docker.sock").ping())
print(Containers("unix:///nonexistent/docker.sock").list(inspect=False))
print("docker" in sys.modules, "requests" in sys.modules, libvirt_binding.loaded())
print(libvirt_binding.missing(), libvirt_binding.loaded())
"""


def test_no_engine_and_no_daemon_load_neither_sdk() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert "libvirtd is not running" in out[0] and out[0].startswith("(False")
    assert "no Docker engine at unix:///nonexistent/docker.sock" in out[1]
    assert "its socket does not exist" in out[2]
    assert out[3] == "False False False"  # asked, answered, and nothing loaded
    assert out[4] == "None True"  # the binding loads when it is used
