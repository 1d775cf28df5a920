#!/usr/bin/env python3
"""Build the VM example workspace (``workspaces/vm``) from this machine's Debian packages.

    scripts/build-vm-example [DEST]

The guest is the host's Debian cloud kernel (``linux-image-cloud-amd64``) with an
initramfs written here: a gzipped newc cpio holding ``busybox-static``, the virtio
modules (read from ``modules.dep``) and the files of ``workspaces/vm/guest`` (its
``/init``, web page and CGI scripts). Beside them, an empty 16 MiB qcow2 data disk
on which the page keeps its note. The build takes a couple of seconds; nothing is
downloaded. Without DEST the files go into ``workspaces/vm/vm/``; with one, the
whole workspace (manifest and README included) is written there. The system tests
build their VMs with ``build_vm_workspace``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "workspaces" / "vm"
GUEST = EXAMPLE / "guest"
#: what the guest's /init prints on the serial console once its page is served
READY_MARKER = "aienv-vm-ready"
GUEST_PORT = 80
MODULES = ["virtio_pci", "virtio_net", "virtio_blk", "evdev", "button"]
DATA_DISK_SIZE = "16M"
FOLDERS = ["bin", "dev", "proc", "sys", "tmp", "etc", "lib", "lib/modules"]


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


def add_tree(cpio: Cpio, folder: Path) -> None:
    """Every folder and file under ``folder``, at the same paths in the archive, with
    their modes (folders first, so the kernel can create what follows)."""
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_dir():
            cpio.dir(name)
        elif path.is_file():
            cpio.file(name, path.read_bytes(), path.stat().st_mode & 0o777)


def build_initrd(release: str, guest: Path = GUEST) -> bytes:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is not installed: install busybox-static")
    applets = subprocess.run(
        [busybox, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    cpio = Cpio()
    for folder in FOLDERS:
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
    add_tree(cpio, guest)
    return gzip.compress(cpio.finish(), compresslevel=9, mtime=0)


def build_vm_workspace(root: Path, name: str | None = None) -> VmImage:
    """Write the example's VM files into ``root/vm`` (made anew); unless ``root`` is the
    example itself, also the rest of it: manifest (named ``name`` when given), README
    and guest files."""
    release = kernel_release()
    folder = root / "vm"
    shutil.rmtree(folder, ignore_errors=True)
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
    if root.resolve() != EXAMPLE:
        manifest = (EXAMPLE / "workspace.yaml").read_text()
        if name is not None:
            manifest = manifest.replace("\nname: vm\n", f"\nname: {name}\n", 1)
        (root / "workspace.yaml").write_text(manifest)
        shutil.copyfile(EXAMPLE / "README.md", root / "README.md")
        shutil.rmtree(root / "guest", ignore_errors=True)
        shutil.copytree(GUEST, root / "guest")
    for path in (kernel, initrd, disk):
        os.chmod(path, 0o644)
    return VmImage(root=root, kernel=kernel, initrd=initrd, disk=disk)


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the VM example workspace.")
    parser.add_argument("dest", nargs="?", type=Path, default=EXAMPLE, help="workspace folder")
    dest = parser.parse_args().dest
    try:
        image = build_vm_workspace(dest)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"build-vm-example: {exc}", file=sys.stderr)
        return 1
    for path in (image.kernel, image.initrd, image.disk):
        print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB")
    print(f"share it with: aienv create vm --from {image.root} && aienv share vm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
