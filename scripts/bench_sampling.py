"""Sampling benchmark (run it with scripts/bench sampling): what the node's sampler
costs on a machine with ~500 extra processes.

Two measurements, each against a baseline that is the same thing without sampling:

1. the sampler alone: a child process runs ``Sampler.async_run`` (real process
   table, real SQLite state store, no Docker engine) at the interval for the
   duration; the baseline child runs the same event loop and store, idle. Per
   cycle it records the CPU time the cycle took (process CPU around the sample
   and its recording; nothing else runs in the child).
2. the whole node: ``aienv serve`` in a network namespace with
   ``AIENV_SAMPLE_INTERVAL`` at the interval, then at 0, each for the duration;
   its CPU time and RSS from /proc.

Every process it starts (the sleepers, the children, the node) is ended by its
pid. Prints a Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aienv.system.inventory import cpu_model  # noqa: E402
from tests.lan import Lan  # noqa: E402


def child(interval: float, duration: float, home: Path) -> None:
    """Run the sampler (or, at interval 0, only the loop and the store) and report JSON."""
    from aienv.state.db import Database
    from aienv.state.store import StateStore
    from aienv.system.sampler import Sampler

    state = StateStore(Database(home / "state.sqlite3"))
    sampler = Sampler(state, f"unix://{home}/no-docker.sock", interval)
    cycles: list[float] = []

    async def run() -> None:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            if interval == 0:
                await asyncio.sleep(1.0)
                continue
            before = time.process_time()
            sample, found = await asyncio.to_thread(sampler.sample)
            sampler.record(sample, found)
            cycles.append(time.process_time() - before)
            await asyncio.sleep(max(0.0, min(interval, end - time.monotonic())))

    start_cpu = time.process_time()
    asyncio.run(run())
    rss = psutil.Process().memory_info().rss
    print(
        json.dumps(
            {"cpu": time.process_time() - start_cpu, "rss": rss, "cycles": cycles},
        )
    )


def run_child(interval: float, duration: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="aienv-bench-") as home:
        res = subprocess.run(
            [sys.executable, __file__, "--child", str(interval), str(duration), home],
            capture_output=True,
            text=True,
            check=True,
        )
    return dict(json.loads(res.stdout))


def node_cost(interval: float, duration: float, root: Path) -> tuple[float, int]:
    """CPU seconds and final RSS of a node over ``duration`` with the given sampling."""
    with Lan(root, 1) as lan:
        host = lan.hosts[0]
        host.extra_env = {
            "AIENV_SAMPLE_INTERVAL": str(interval),
            "AIENV_DOCKER_HOST": f"unix://{host.home}/no-docker.sock",
            "AIENV_LIBVIRT_URI": f"qemu:///system?socket={host.home}/no-libvirt-sock",
        }
        host.start("bench", interval=10.0)
        assert host.proc is not None
        node = psutil.Process(host.proc.pid)
        time.sleep(5)  # start-up done: probes, first samples
        t0 = node.cpu_times()
        time.sleep(duration)
        t1 = node.cpu_times()
        rss = node.memory_info().rss
        host.stop()
    return (t1.user + t1.system) - (t0.user + t0.system), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=500)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--no-node", action="store_true", help="skip the whole-node measurement")
    args = parser.parse_args()
    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.processes)]
    try:
        total = len(psutil.pids())
        sampled = run_child(args.interval, args.duration)
        idle = run_child(0, args.duration)
        node = None
        if not args.no_node:
            with tempfile.TemporaryDirectory(prefix="aienv-bench-lan-") as root:
                on = node_cost(args.interval, args.duration, Path(root) / "on")
                off = node_cost(0, args.duration, Path(root) / "off")
            node = (on, off)
    finally:
        for proc in sleepers:
            proc.kill()  # our own sleepers, by pid
        for proc in sleepers:
            proc.wait()
    report(args, total, sampled, idle, node)


def report(
    args: argparse.Namespace,
    total: int,
    sampled: dict[str, object],
    idle: dict[str, object],
    node: tuple[tuple[float, int], tuple[float, int]] | None,
) -> None:
    cycles = [float(c) for c in sampled["cycles"]]  # type: ignore[attr-defined]
    steady = cycles[2:] or cycles  # the first two cycles also recognise every process
    added_cpu = float(sampled["cpu"]) - float(idle["cpu"])  # type: ignore[arg-type]
    added_rss = int(sampled["rss"]) - int(idle["rss"])  # type: ignore[call-overload]
    per_cycle = [100 * c / args.interval for c in cycles]
    print(f"\n## Sampling ({time.strftime('%Y-%m-%d')})\n")
    print(
        f"`scripts/bench sampling`: {args.processes} extra idle processes (`sleep`), "
        f"{total} processes in all; the sampler at its {args.interval:g} s interval for "
        f"{args.duration:g} s, no Docker engine; {cpu_model()}, {psutil.cpu_count()} logical "
        f"CPUs, Linux {platform.release()}, Python {platform.python_version()}.\n"
    )
    print("| measure | value |")
    print("|---|---|")
    rows = [
        ("cycles", f"{len(cycles)}"),
        (
            "CPU per cycle, median (all / from the 3rd)",
            f"{1000 * statistics.median(cycles):.1f} ms / "
            f"{1000 * statistics.median(steady):.1f} ms",
        ),
        (
            "CPU per cycle, max (the first: every process recognised)",
            f"{1000 * max(cycles):.0f} ms",
        ),
        ("median cycle as % of a core over its interval", f"{statistics.median(per_cycle):.2f} %"),
        (
            "sampler child CPU vs idle child, added",
            f"{added_cpu:.2f} s = {100 * added_cpu / args.duration:.2f} % of a core on average",
        ),
        ("sampler child RSS vs idle child, added", f"{added_rss / 1024**2:.1f} MiB"),
    ]
    if node is not None:
        (on_cpu, on_rss), (off_cpu, off_rss) = node
        rows += [
            (
                f"node with sampling: CPU over {args.duration:g} s, RSS",
                f"{on_cpu:.2f} s ({100 * on_cpu / args.duration:.2f} % of a core), "
                f"{on_rss / 1024**2:.1f} MiB",
            ),
            (
                "node without sampling (`AIENV_SAMPLE_INTERVAL=0`)",
                f"{off_cpu:.2f} s ({100 * off_cpu / args.duration:.2f} % of a core), "
                f"{off_rss / 1024**2:.1f} MiB",
            ),
            (
                "added by sampling in the node",
                f"{100 * (on_cpu - off_cpu) / args.duration:.2f} % of a core, "
                f"{(on_rss - off_rss) / 1024**2:.1f} MiB",
            ),
        ]
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(float(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
