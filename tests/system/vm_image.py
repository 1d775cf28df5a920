"""A tiny VM workspace built from what this machine has, in a couple of seconds.

The guest is the host's Debian cloud kernel with an initramfs written here: a
gzipped newc cpio holding busybox-static, the virtio modules (read from
``modules.dep``) and an ``/init`` that brings up the network with the addresses
qemu's user-mode networking expects, prints a marker on the serial console and
serves HTTP on port 80:

- ``/`` a static page;
- ``/cgi-bin/disk`` reads the first bytes of the data disk ``/dev/vda``;
  ``?write=VALUE`` writes VALUE there first (synced, so it reaches the disk);
- ``/cgi-bin/info`` the guest's CPU count and memory size.

An ACPI power-button press powers the guest off (busybox acpid), so a polite
``shutdown`` works. Nothing is downloaded and nothing is cached between runs.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

READY_MARKER = "aienv-vm-ready"
GUEST_PORT = 80
MODULES = ["virtio_pci", "virtio_net", "virtio_blk", "evdev", "button"]
DATA_DISK_SIZE = "16M"

INIT = f"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
acpid -c /etc/acpi -l /dev/null
httpd -p {GUEST_PORT} -h /www
echo "{READY_MARKER} cpus=$(nproc)"
while true; do sleep 3600; done
"""

DISK_CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo
case "$QUERY_STRING" in
  write=*)
    value=${QUERY_STRING#write=}
    printf '%-64s' "$value" | dd of=/dev/vda bs=64 count=1 conv=notrunc,fsync 2>/dev/null
    ;;
esac
dd if=/dev/vda bs=64 count=1 2>/dev/null | tr -d ' \\000'
echo
"""

INFO_CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "cpus=$(nproc)"
grep MemTotal /proc/meminfo
"""

POWER_BUTTON = """#!/bin/sh
sync
poweroff -f
"""

MANIFEST = """apiVersion: aienv/v1
name: {name}
version: 0.1.0
description: a busybox VM for the system tests
environments:
  - name: web
    runtime: vm
    requires:
      cpus: 1
      memory: 128MiB
    recommends:
      cpus: 2
      memory: 256MiB
    endpoints:
      - name: http
        port: {port}
    vm:
      kernel: vm/vmlinuz
      initrd: vm/initrd.img
      disk: vm/data.qcow2
      cmdline: "panic=0 loglevel=5"
"""


@dataclass(slots=True, frozen=True)
class VmImage:
    root: Path  # the workspace folder
    kernel: Path
    initrd: Path
    disk: Path


class Cpio:
    """A newc ("070701") archive, the format the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = [
            self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
            0, 0, rdev[0], rdev[1], len(encoded), 0,
        ]  # fmt: skip
        self._ino += 1
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self._chunks += [header, encoded, _pad(len(header) + len(encoded)), data, _pad(len(data))]

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._chunks)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def kernel_release() -> str:
    """The newest kernel with both an image in /boot and its modules in /lib/modules."""
    found = sorted(
        p.name.removeprefix("vmlinuz-")
        for p in Path("/boot").glob("vmlinuz-*")
        if (Path("/lib/modules") / p.name.removeprefix("vmlinuz-") / "modules.dep").is_file()
    )
    if not found:
        raise RuntimeError("no kernel with modules here: install linux-image-cloud-amd64")
    return found[-1]


def module_order(release: str, wanted: list[str]) -> list[Path]:
    """The module files ``wanted`` needs, dependencies first; built-in ones are left out."""
    base = Path("/lib/modules") / release
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.removesuffix(".ko").replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[path]:
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise RuntimeError(
                f"module {name} is not in {base}/modules.dep (compressed or missing)"
            )
        visit(by_name[name])
    return [base / p for p in order]


def build_initrd(release: str) -> bytes:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is not installed: install busybox-static")
    applets = subprocess.run(
        [busybox, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    cpio = Cpio()
    for folder in ("bin", "dev", "proc", "sys", "tmp", "etc", "etc/acpi", "etc/acpi/PWRF",
                   "lib", "lib/modules", "www", "www/cgi-bin"):  # fmt: skip
        cpio.dir(folder)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    for applet in applets:
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    names = []
    for module in module_order(release, MODULES):
        name = module.name.removesuffix(".ko")
        names.append(name)
        cpio.file(f"lib/modules/{name}.ko", module.read_bytes())
    cpio.file("etc/modules.order", "\n".join(names).encode() + b"\n")
    cpio.file("etc/acpi/PWRF/00000080", POWER_BUTTON.encode(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    cpio.file("www/index.html", b"<h1>hello from the aienv test VM</h1>\n")
    cpio.file("www/cgi-bin/disk", DISK_CGI.encode(), 0o755)
    cpio.file("www/cgi-bin/info", INFO_CGI.encode(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def build_vm_workspace(root: Path, name: str = "vmtest") -> VmImage:
    """Write a VM workspace into ``root`` (created): kernel, initramfs, data disk, manifest."""
    release = kernel_release()
    folder = root / "vm"
    folder.mkdir(parents=True)
    kernel = folder / "vmlinuz"
    shutil.copyfile(f"/boot/vmlinuz-{release}", kernel)
    initrd = folder / "initrd.img"
    initrd.write_bytes(build_initrd(release))
    disk = folder / "data.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), DATA_DISK_SIZE],
        check=True,
        capture_output=True,
    )
    (root / "workspace.yaml").write_text(MANIFEST.format(name=name, port=GUEST_PORT))
    for path in (kernel, initrd, disk):
        os.chmod(path, 0o644)
    return VmImage(root=root, kernel=kernel, initrd=initrd, disk=disk)
