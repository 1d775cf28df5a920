"""A LAN of many idle nodes (scripts/bench lan --nodes 60): what each costs.

``--nodes`` namespace nodes on one bridge, default settings (multicast and DNS-SD
on, a 10 s announcement interval), sharing nothing. After ``--warmup`` seconds
(everyone has found everyone), for ``--window`` seconds: each node's CPU (its
process's user+system time, from /proc), its resident memory at the end, the
datagrams it received and the HTTP polls of announcements it made (its discovery
counters: ``polls``, and ``polls_skipped`` — DNS-SD or manual peers that
multicast already brought). Prints a Markdown section for docs/benchmarks.md
(progress on stderr); ``--json PATH`` writes the raw numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench_update import finish, log, wait  # noqa: E402
from tests.lan import Host, Lan  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def counters(host: Host) -> dict[str, int]:
    return dict(host.api("/node").json()["discovery"]["counters"])


def peers_seen(host: Host) -> int:
    return len(host.api("/peers").json()["peers"])


def run(opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": []}
    with Lan(root / "hosts", opts.nodes) as lan:
        for i, host in enumerate(lan.hosts):
            host.start(f"n{i:02}", *opts.extra, interval=opts.interval)
        log(f"{opts.nodes} nodes up; waiting until each sees the others")
        wait(lambda: min(peers_seen(h) for h in lan.hosts) >= opts.nodes - 1, 120, "all seen")
        time.sleep(opts.warmup)
        pids = [h.proc.pid for h in lan.hosts if h.proc is not None]
        before = [(cpu_seconds(p), counters(h)) for p, h in zip(pids, lan.hosts, strict=True)]
        start = time.monotonic()
        time.sleep(opts.window)
        took = time.monotonic() - start
        for (cpu0, c0), pid, host in zip(before, pids, lan.hosts, strict=True):
            c1 = counters(host)
            out["nodes"].append({
                "cpu_percent": 100 * (cpu_seconds(pid) - cpu0) / took,
                "rss": rss(pid),
                "datagrams_per_s": (c1.get("received", 0) - c0.get("received", 0)) / took,
                "polls_per_s": (c1.get("polls", 0) - c0.get("polls", 0)) / took,
                "skipped_per_s": (c1.get("polls_skipped", 0) - c0.get("polls_skipped", 0)) / took,
                "peers": peers_seen(host),
            })  # fmt: skip
        log("measured")
    out["window"] = took
    return out


def report(opts: argparse.Namespace, data: dict[str, Any]) -> str:
    nodes = data["nodes"]

    def med(key: str) -> float:
        return statistics.median(n[key] for n in nodes)

    cpu = med("cpu_percent")
    total_polls = sum(n["polls_per_s"] for n in nodes)
    return "\n".join([
        f"### A LAN of {opts.nodes} idle nodes ({datetime.date.today().isoformat()},"
        f" scripts/bench lan{' ' + ' '.join(opts.extra) if opts.extra else ''})",
        "",
        f"{platform.node()}: {os.cpu_count()} cores; {opts.nodes} namespace nodes on one bridge,"
        f" announcing every {opts.interval:g} s, sharing nothing; measured over"
        f" {data['window']:.0f} s after {opts.warmup:g} s of warm-up.",
        "",
        "| per node | median | max |",
        "|---|---|---|",
        f"| CPU (% of a core) | {cpu:.2f} | {max(n['cpu_percent'] for n in nodes):.2f} |",
        f"| RSS | {med('rss') / 2**20:.1f} MiB | {max(n['rss'] for n in nodes) / 2**20:.1f} MiB |",
        f"| datagrams received / s | {med('datagrams_per_s'):.2f} |"
        f" {max(n['datagrams_per_s'] for n in nodes):.2f} |",
        f"| HTTP polls of announcements / s | {med('polls_per_s'):.3f} |"
        f" {max(n['polls_per_s'] for n in nodes):.3f} |",
        f"| polls skipped (multicast brought them) / s | {med('skipped_per_s'):.2f} |"
        f" {max(n['skipped_per_s'] for n in nodes):.2f} |",
        f"| peers seen | {med('peers'):.0f} | {max(n['peers'] for n in nodes)} |",
        "",
        f"The whole LAN: {sum(n['cpu_percent'] for n in nodes):.1f} % of a core,"
        f" {total_polls:.2f} announcement polls / s.",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=60)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="flags for every node (after --), e.g. --no-dnssd")
    finish(parser.parse_args(), run, report, "lan")


if __name__ == "__main__":
    main()
