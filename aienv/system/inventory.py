"""What this machine has: CPUs, memory, disks, network interfaces, GPUs, KVM,
and which runtimes can run here.

Everything is read with psutil and the kernel's own interfaces; GPUs come from
NVML (``nvidia-ml-py``) when it is installed and a driver answers — no GPU is a
normal answer, not an error. Each probe is cheap and never raises.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12
# what the node keeps back for the machine itself when it plans memory
HOST_RESERVE_FRACTION = 0.10
HOST_RESERVE_MAX = 1024**3
SUMMARY_KEYS = 16  # codec.Body.resources holds at most this many values


@dataclass(slots=True, frozen=True)
class Gpu:
    index: int
    name: str
    memory: int
    vendor: str = "nvidia"


@dataclass(slots=True, frozen=True)
class Capacity:
    """What the planner may hand out here (pure data, so plans can be tested anywhere)."""

    cpus: float  # whole cores here; a share of them in a group offer
    memory_free: int
    disk_free: int
    gpus: tuple[Gpu, ...] = ()
    kvm: bool = False
    memory_total: int = 0
    memory_available: int = 0  # before the host reserve


def busy_and_total(times: Any) -> tuple[float, float]:
    """CPU seconds spent busy, and in all, from a ``psutil.cpu_times()`` answer (Linux
    counts guest time in user and nice already: it is not added twice)."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def busy_percent(before: tuple[float, float], now: tuple[float, float]) -> float:
    """The share of the machine's CPU time that was busy between two ``busy_and_total``."""
    busy, total = now[0] - before[0], now[1] - before[1]
    if total <= 0:
        return 0.0
    return round(min(100.0, max(0.0, 100.0 * busy / total)), 1)


class CpuMeter:
    """The machine's CPU use since the previous reading (or since it was made), from any
    thread: ``psutil.cpu_percent(interval=None)`` keeps its previous reading per thread
    (psutil 7), and the readers here run on whichever worker thread is free."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = busy_and_total(psutil.cpu_times())

    def percent(self) -> float:
        with self._lock:
            now = busy_and_total(psutil.cpu_times())
            before, self._last = self._last, now
        return busy_percent(before, now)


MACHINE_CPU = CpuMeter()  # for the inventory read without a sampler's meter


def kvm_is_pvm_only() -> bool:
    """Whether /dev/kvm is served by PVM alone, which boots only PVM-built guest kernels."""
    modules = Path("/sys/module")
    return (modules / "kvm_pvm").exists() and not any(
        (modules / m).exists() for m in ("kvm_intel", "kvm_amd")
    )


def kvm_status() -> tuple[bool, str]:
    """Whether a KVM virtual machine with an ordinary guest kernel can run here, and why not."""
    if kvm_is_pvm_only():
        return False, (
            "/dev/kvm is served by kvm_pvm alone (no kvm_intel or kvm_amd): "
            "it runs only PVM-built guest kernels"
        )
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, "/dev/kvm does not exist (no hardware virtualisation, or kvm not loaded)"
    except PermissionError:
        return False, "/dev/kvm is not accessible to this user (join the 'kvm' group)"
    except OSError as exc:
        return False, f"/dev/kvm cannot be opened: {exc.strerror}"
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != KVM_API_VERSION:
            return False, "/dev/kvm speaks an unexpected API version"
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
    except OSError as exc:
        return False, f"/dev/kvm refused to create a VM: {exc.strerror}"
    finally:
        os.close(fd)
    return True, ""


def gpus() -> list[Gpu]:
    """NVIDIA GPUs through NVML; an empty list when there is no library, driver or GPU."""
    try:
        import pynvml  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return []
    found: list[Gpu] = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            dev = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(dev)
            mem = pynvml.nvmlDeviceGetMemoryInfo(dev).total
            found.append(Gpu(i, name.decode() if isinstance(name, bytes) else str(name), int(mem)))
    except Exception:
        return found
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return found


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host_reserve(total: int) -> int:
    return min(int(total * HOST_RESERVE_FRACTION), HOST_RESERVE_MAX)


def capacity(home: Path, *, kvm: bool | None = None) -> Capacity:
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(str(home))
    return Capacity(
        cpus=len(os.sched_getaffinity(0)) or psutil.cpu_count() or 1,
        memory_free=max(0, mem.available - host_reserve(mem.total)),
        memory_total=mem.total,
        memory_available=mem.available,
        disk_free=disk.free,
        gpus=tuple(gpus()),
        kvm=kvm_status()[0] if kvm is None else kvm,
    )


def _disks() -> list[dict[str, Any]]:
    out = []
    for part in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        out.append(
            {
                "device": part.device,
                "mount": part.mountpoint,
                "fstype": part.fstype,
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "used_percent": usage.percent,
            }
        )
    return out


def _interfaces() -> list[dict[str, Any]]:
    stats = psutil.net_if_stats()
    try:
        counters = psutil.net_io_counters(pernic=True)
    except OSError:
        counters = {}
    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        st = stats.get(name)
        io = counters.get(name)
        out.append(
            {
                "name": name,
                "up": bool(st and st.isup),
                "speed_mbit": st.speed if st else 0,
                "mtu": st.mtu if st else 0,
                "addresses": [
                    a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)
                ],
                "mac": next((a.address for a in addrs if a.family == psutil.AF_LINK), None),
                "counters": {
                    "bytes_sent": io.bytes_sent,
                    "bytes_recv": io.bytes_recv,
                    "packets_sent": io.packets_sent,
                    "packets_recv": io.packets_recv,
                    "errors_in": io.errin,
                    "errors_out": io.errout,
                    "drops_in": io.dropin,
                    "drops_out": io.dropout,
                }
                if io
                else None,
            }
        )
    return out


def os_name() -> str:
    """The distribution's name (``PRETTY_NAME`` of /etc/os-release), else the system's."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.system()


def _usage(cpu: CpuMeter) -> dict[str, Any]:
    """What the full inventory adds to the hardware: usage now, kernel, swap.

    ``cpu.usage_percent`` is measured since the previous reading of ``cpu`` (the
    sampler's, every few seconds).
    """
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "kernel": platform.release(),
        "os": os_name(),
        "cpu_usage_percent": cpu.percent(),
        "memory": {"used": mem.used, "percent": mem.percent, "swap_total": swap.total,
                   "swap_used": swap.used},
    }  # fmt: skip


def inventory(
    home: Path, runtimes: dict[str, tuple[bool, str]], cpu: CpuMeter = MACHINE_CPU
) -> dict[str, Any]:
    """The hardware picture, as ``aienv system --json`` and ``GET /api/v1/system`` show it
    (``aienv.system.full`` adds processes, services and containers)."""
    kvm_ok, kvm_why = kvm_status()
    cap = capacity(home, kvm=kvm_ok)
    load = os.getloadavg()
    usage = _usage(cpu)
    return {
        "host": socket.gethostname(),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "os": usage["os"],
            "kernel": usage["kernel"],
        },
        "uptime": round(time.time() - psutil.boot_time()),
        "boot_time": psutil.boot_time(),
        "cpu": {
            "model": cpu_model(),
            "logical": psutil.cpu_count() or 1,
            "physical": psutil.cpu_count(logical=False),
            "usable": cap.cpus,
            "load": [round(x, 2) for x in load],
            "usage_percent": usage["cpu_usage_percent"],
        },
        "memory": {
            "total": cap.memory_total,
            "available": cap.memory_available,
            "plannable": cap.memory_free,
            "reserve": host_reserve(cap.memory_total),
            **usage["memory"],
        },
        "disks": _disks(),
        "home_disk_free": cap.disk_free,
        "interfaces": _interfaces(),
        "gpus": [asdict(g) for g in cap.gpus],
        "kvm": {"usable": kvm_ok, "reason": kvm_why},
        "runtimes": {
            name: {"available": ok, "reason": why} for name, (ok, why) in sorted(runtimes.items())
        },
    }


def summary(cap: Capacity, runtimes: dict[str, tuple[bool, str]]) -> dict[str, int]:
    """The few numbers an announcement carries (see docs/protocol.md)."""
    out = {
        "cpus": int(cap.cpus),
        "memory": cap.memory_total,
        "memory_free": cap.memory_free,
        "disk_free": cap.disk_free,
        "gpus": len(cap.gpus),
        "kvm": int(cap.kvm),
    }
    builtin = [n for n in ("process", "container", "vm") if n in runtimes]
    plugins = sorted(set(runtimes) - set(builtin))
    for name in builtin + plugins:
        if len(out) >= SUMMARY_KEYS:  # the announcement's limit
            break
        out[f"rt_{name}"] = int(runtimes[name][0])
    return out
