"""The libvirt domain XML of an aienv VM, a pure function of ``DomainConfig``
(see ``aienv.runtime.vm`` for why each part is the way it is)."""

from __future__ import annotations

import hashlib
import platform
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NIC_SLOT = "0x1f"
MAX_DOMAIN_NAME = 64

ET.register_namespace("qemu", QEMU_NS)


def domain_name(env_id: str, node_id: str = "") -> str:
    """``aienv-WORKSPACE-ENV-HASH``: readable, at most 64 characters, and distinct for
    two nodes sharing one libvirt (the hash covers the node id)."""
    digest = hashlib.sha256(f"{node_id}/{env_id}".encode()).hexdigest()[:8]
    readable = env_id.replace(".", "-")[: MAX_DOMAIN_NAME - len("aienv--") - len(digest)]
    return f"aienv-{readable}-{digest}"


def kernel_cmdline(cmdline: str) -> str:
    if any(word.startswith("console=") for word in cmdline.split()):
        return cmdline
    return f"console=ttyS0 {cmdline}".strip()


@dataclass(slots=True)
class DomainConfig:
    """Everything the domain XML says; ``domain_xml`` is a pure function of it."""

    name: str
    accel: str
    memory_kib: int
    vcpus: int
    log_path: Path
    disk: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    forwards: list[tuple[int, int]] = field(default_factory=list)  # (host port, guest port)
    uuid: str | None = None
    user: tuple[int, int] | None = None  # qemu's uid and gid; None leaves libvirt's choice
    description: str = ""


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, attrs)
    if text is not None:
        node.text = text
    return node


def domain_xml(cfg: DomainConfig) -> str:
    root = ET.Element("domain", {"type": "kvm" if cfg.accel == "kvm" else "qemu"})
    _sub(root, "name", cfg.name)
    if cfg.uuid:
        _sub(root, "uuid", cfg.uuid)
    if cfg.description:
        _sub(root, "description", cfg.description)
    _sub(root, "memory", str(cfg.memory_kib), unit="KiB")
    _sub(root, "vcpu", str(cfg.vcpus), placement="static")
    arch = platform.machine()
    os_el = _sub(root, "os")
    if arch == "x86_64":
        _sub(os_el, "type", "hvm", arch=arch, machine="pc")
    else:
        _sub(os_el, "type", "hvm", arch=arch)
    if cfg.kernel is not None:
        _sub(os_el, "kernel", str(cfg.kernel))
        if cfg.initrd is not None:
            _sub(os_el, "initrd", str(cfg.initrd))
        _sub(os_el, "cmdline", kernel_cmdline(cfg.cmdline))
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if cfg.accel == "kvm":
        _sub(root, "cpu", mode="host-passthrough", check="none", migratable="on")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    if cfg.disk is not None:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", discard="unmap")
        _sub(disk, "source", file=str(cfg.disk))
        _sub(disk, "target", dev="vda", bus="virtio")
    _sub(devices, "controller", type="usb", model="none")
    serial = _sub(devices, "serial", type="pty")  # the terminal opens it through libvirt
    _sub(serial, "log", file=str(cfg.log_path), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    if cfg.user is not None:
        label = _sub(root, "seclabel", type="static", model="dac", relabel="no")
        _sub(label, "label", f"+{cfg.user[0]}:+{cfg.user[1]}")
    netdev = "user,id=aienv0" + "".join(f",hostfwd=tcp::{h}-:{g}" for h, g in cfg.forwards)
    args = ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=aienv0,romfile=,addr={NIC_SLOT}"]
    commandline = _sub(root, f"{{{QEMU_NS}}}commandline")
    for arg in args:
        _sub(commandline, f"{{{QEMU_NS}}}arg", value=arg)
    return ET.tostring(root, encoding="unicode")


def guest_domain_types(caps_xml: str, arch: str) -> set[str]:
    """The domain types (``qemu``, ``kvm``) libvirt offers for ``arch`` guests."""
    found: set[str] = set()
    for guest in ET.fromstring(caps_xml).iter("guest"):
        arch_el = guest.find("arch")
        if arch_el is None or arch_el.get("name") != arch or arch_el.findtext("emulator") is None:
            continue
        found.update(d.get("type", "") for d in arch_el.iter("domain"))
    return found - {""}
