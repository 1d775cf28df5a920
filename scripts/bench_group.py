"""Placement benchmark on a shaped LAN of three namespace nodes (scripts/bench group).

alpha shares a workspace (hello-web with ``--size`` of random data, default 256
MiB) and offers the group almost nothing (``--offer-memory 32MiB``); beta offers a
little, gamma plenty, and both are paired with alpha. Each of ``--runs`` rounds
times, from the command's start until it returns with the endpoint answering:

- ``aienv launch lab`` on alpha: the local launch of the installed workspace;
- ``aienv launch lab --on auto`` on alpha, which places it on gamma: gamma plans
  it, clones it from the swarm and launches it (the workspace deleted on gamma
  and a new revision shared before each round, so every round downloads it);
- the same again with gamma still holding the workspace (stopped, not deleted).

Every endpoint is then fetched from alpha over the LAN. Links shaped with ``tc
tbf`` to ``--rate`` (default 1 Gbit/s). Prints a Markdown section for
docs/benchmarks.md (progress on stderr); ``--json PATH`` writes the raw numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench_update import finish, log, shape, wait  # noqa: E402
from tests.lan import Host, Lan  # noqa: E402

MIB = 1024 * 1024
HELLO = REPO / "workspaces" / "hello-web"


def timed(host: Host, *args: str) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    done = host.cli(*args, "--json", timeout=3600)
    return time.monotonic() - start, json.loads(done.stdout)


def answers(host: Host, url: str) -> bool:
    done = host.run("curl", "-sf", "--max-time", "5", url + "health")
    return done.returncode == 0 and '"ok"' in done.stdout


def make(folder: Path, size: int) -> None:
    shutil.copytree(HELLO, folder)
    manifest = folder / "workspace.yaml"
    text = (
        manifest.read_text()
        .replace("name: hello-web", "name: lab")
        .replace(
            "    runtime: process\n",
            "    runtime: process\n    requires: {memory: 64MiB}\n"
            "    recommends: {memory: 256MiB}\n",
        )
    )
    manifest.write_text(text)
    with (folder / "data" / "payload.bin").open("wb") as out:
        left = size
        while left:
            out.write(os.urandom(min(left, 16 * MIB)))
            left -= min(left, 16 * MIB)


def _revision(host: Host) -> int:
    peers = json.loads(host.cli("peers", "--json").stdout)
    found = [w for p in peers if p["name"] == "alpha" for w in p["workspaces"]]
    return int(found[0].get("revision") or 0) if found else 0


def pair(shows: Host, types: Host, name: str) -> None:
    code = json.loads(shows.cli("pair", "--no-wait", "--json").stdout)["code"]
    types.cli("pair", name, input=f"{code}\n")


def run(opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"local": [], "placed": [], "placed_held": []}
    with Lan(root / "hosts", 3) as lan:
        alpha, beta, gamma = lan.hosts
        for host in lan.hosts:
            shape(lan, host, opts.rate)
        alpha.start("alpha", "--offer-memory", "32MiB", interval=1.0)
        beta.start("beta", "--offer-memory", "128MiB", interval=1.0)
        gamma.start("gamma", "--offer-memory", "2GiB", interval=1.0)
        make(root / "lab", opts.size)
        alpha.cli("create", "lab", "--from", str(root / "lab"), timeout=3600)
        alpha.cli("share", "lab", timeout=3600)
        for host in (beta, gamma):
            wait(lambda h=host: "alpha" in h.cli("peers").stdout, 10, "peers")
            pair(alpha, host, "alpha")
        for n in range(opts.runs):
            if n:  # a new revision: gamma holds none of it, so the placement clones it
                with (alpha.home / "workspaces" / "lab" / "data" / "payload.bin").open("r+b") as f:
                    f.write(os.urandom(MIB))
                alpha.cli("share", "lab", timeout=3600)
                wait(lambda r=n + 1: _revision(gamma) == r, 10, "gamma hears of the new revision")
            seconds, record = timed(alpha, "launch", "lab")
            assert answers(alpha, record["endpoints"][0]["url"])
            out["local"].append(seconds)
            alpha.cli("stop", "lab")
            for key in ("placed", "placed_held"):
                seconds, placed = timed(alpha, "launch", "lab", "--on", "auto")
                assert placed["node"] == "gamma", placed["node"]
                assert answers(alpha, placed["environment"]["endpoints"][0]["lan_url"])
                out[key].append({"seconds": seconds, "reported": placed["seconds"]})
                alpha.cli("stop", "lab.web", "--on", "gamma")
            gamma.cli("delete", "lab")
            log(f"round {n + 1}: local {out['local'][-1]:.2f} s, placed "
                f"{out['placed'][-1]['seconds']:.2f} s, placed again "
                f"{out['placed_held'][-1]['seconds']:.2f} s")  # fmt: skip
    return out


def report(opts: argparse.Namespace, data: dict[str, Any]) -> str:
    local = statistics.median(data["local"])
    placed = statistics.median(r["seconds"] for r in data["placed"])
    held = statistics.median(r["seconds"] for r in data["placed_held"])
    return "\n".join([
        f"### Placement ({datetime.date.today().isoformat()}, scripts/bench group)",
        "",
        f"{platform.node()}: {os.cpu_count()} cores, links shaped to {opts.rate}; hello-web"
        f" with {opts.size // MIB} MiB of data, shared by alpha, which offers the group"
        f" 32 MiB; `--on auto` ranks gamma (2 GiB offered) first. From the command's start"
        f" until it returns with the endpoint answering; medians of {opts.runs} rounds.",
        "",
        "| | time | vs local |",
        "|---|---|---|",
        f"| `aienv launch lab` on alpha (local) | {local:.2f} s | 1.00 x |",
        f"| `launch lab --on auto` → gamma, which clones it first | {placed:.2f} s |"
        f" {placed / local:.2f} x |",
        f"| the same, gamma holding it already | {held:.2f} s | {held / local:.2f} x |",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * MIB, help="data bytes")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", default="1gbit")
    parser.add_argument("--json", type=Path)
    finish(parser.parse_args(), run, report, "group")


if __name__ == "__main__":
    main()
