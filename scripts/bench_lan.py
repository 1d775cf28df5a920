"""A LAN of many idle nodes (scripts/bench lan --nodes 60): what each costs.

``--nodes`` namespace nodes on one bridge, default settings (multicast and DNS-SD
on, a 10 s announcement interval), sharing nothing, or with ``--share N`` the first
node sharing N small workspaces (more than a datagram holds: the others fetch the
full list over HTTP, and the bench counts those fetches and times one more share
until every node lists it). ``--warmup`` seconds after everyone has found
everyone (90 by default: the nodes start one after another over a minute or more,
and for a minute after each start every other node's sampler sees one more process
become long-lived and looks it up, where a real machine's sampler would not see
another machine's node; ``--warmup 30`` shows that start), for ``--window``
seconds: each node's CPU (its process's user+system time, from /proc), its resident
memory at the end, the datagrams it received and the HTTP polls of announcements
it made (its discovery counters: ``polls``, and ``polls_skipped`` — DNS-SD or
manual peers that multicast already brought). Prints a Markdown section for docs/benchmarks.md
(progress on stderr); ``--json PATH`` writes the raw numbers.

All namespaces share the kernel's neighbour table: past ~37 nodes with DNS-SD on
(each node polls the peers it finds once, N² ARP entries in all), raise
``net.ipv4.neigh.default.gc_thresh1/2/3`` in the host's namespace for the run
(e.g. 4096/8192/16384) and restore them after; at the default 1024 a new node
stops being reachable (``arp_cache: neighbor table overflow!`` in the kernel log).
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


SHARE = """
import httpx, pathlib, shutil, sys, tempfile, time
api = "http://127.0.0.1:37778/api/v1/workspaces"
root = pathlib.Path(tempfile.mkdtemp())  # the node copies each folder on create
for name in sys.argv[1:]:
    src = root / name
    src.mkdir()
    (src / "workspace.yaml").write_text(f"apiVersion: aienv/v1\\nname: {name}\\nversion: 1.0.0\\n")
    (src / "README.md").write_text(f"{name}: one of many small workspaces\\n")
    httpx.post(api, json={"name": name, "from": str(src)}, timeout=60).raise_for_status()
    t0 = time.time()
    httpx.post(f"{api}/{name}/share", json={}, timeout=60).raise_for_status()
    print(t0, flush=True)
shutil.rmtree(root)
"""


def share(host: Host, *names: str) -> float:
    """Create and share ``names`` on ``host`` (its own namespace: the local admin);
    returns when the last share was asked for (wall clock)."""
    done = host.run(sys.executable, "-c", SHARE, *names)
    if done.returncode != 0:
        raise RuntimeError(f"sharing on {host.ns}: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def lists(host: Host, node: str, name: str) -> bool:
    for peer in host.api("/peers").json()["peers"]:
        if peer["name"] == node:
            return any(w["name"] == name for w in peer["workspaces"])
    return False


def visible_everywhere(lan: Lan, node: str, name: str, since: float) -> list[float]:
    """Seconds from ``since`` until each other node lists ``name`` of ``node``."""
    left, seen = list(lan.hosts[1:]), []
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        for host in list(left):
            if lists(host, node, name):
                seen.append(time.time() - since)
                left.remove(host)
        time.sleep(0.02)
    if left:
        raise RuntimeError(f"{len(left)} nodes did not list {name} within 60 s")
    return seen


def run(opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": []}
    with Lan(root / "hosts", opts.nodes) as lan:
        for i, host in enumerate(lan.hosts):
            # (a node starting among 40 others on 2 cores may take longer than a test's)
            host.start(f"n{i:02}", *opts.extra, interval=opts.interval, up=90)
        log(f"{opts.nodes} nodes up; waiting until each sees the others")
        wait(lambda: min(peers_seen(h) for h in lan.hosts) >= opts.nodes - 1, 120, "all seen")
        if opts.share:
            log(f"n00 shares {opts.share} workspaces")
            share(lan.hosts[0], *(f"ws{i:03}" for i in range(opts.share)))
            wait(lambda: all(lists(h, "n00", f"ws{opts.share - 1:03}") for h in lan.hosts[1:]),
                 120, "the last one listed everywhere")  # fmt: skip
            out["announcement_bytes"] = len(lan.hosts[0].api("/node/announcement").content)
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
                "fetches_per_s": (c1.get("full_list_fetches", 0) - c0.get("full_list_fetches", 0))
                / took,
                "peers": peers_seen(host),
            })  # fmt: skip
        log("measured")
        if opts.share:
            out["visible"] = []
            for round_ in range(opts.rounds):
                name = f"late{round_}"
                out["visible"].append(max(visible_everywhere(
                    lan, "n00", name, share(lan.hosts[0], name))))  # fmt: skip
                log(f"{name}: listed everywhere {out['visible'][-1]:.2f} s after its share")
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
        f" announcing every {opts.interval:g} s, sharing"
        f" {f'{opts.share} workspaces (n00)' if opts.share else 'nothing'}; measured over"
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
        f"| full-list fetches / s | {med('fetches_per_s'):.3f} |"
        f" {max(n['fetches_per_s'] for n in nodes):.3f} |",
        f"| peers seen | {med('peers'):.0f} | {max(n['peers'] for n in nodes)} |",
        "",
        *shared_lines(opts, data),
        f"The whole LAN: {sum(n['cpu_percent'] for n in nodes):.1f} % of a core,"
        f" {total_polls:.2f} announcement polls / s.",
    ])  # fmt: skip


def shared_lines(opts: argparse.Namespace, data: dict[str, Any]) -> list[str]:
    if not opts.share:
        return []
    seen = data["visible"]
    return [
        f"n00 shares {opts.share} workspaces; its full announcement is"
        f" {data['announcement_bytes'] / 1024:.0f} KiB. One more share, listed by every"
        f" other node after: median {statistics.median(seen):.2f} s, max {max(seen):.2f} s"
        f" ({len(seen)} rounds).",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=60)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=90.0,
        help="seconds after every node sees the others (past the samplers' start: below)",
    )
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--share", type=int, default=0, help="workspaces the first node shares")
    parser.add_argument("--rounds", type=int, default=5, help="late shares timed (with --share)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="flags for every node (after --), e.g. --no-dnssd")
    finish(parser.parse_args(), run, report, "lan")


if __name__ == "__main__":
    main()
