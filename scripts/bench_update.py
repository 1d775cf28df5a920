"""Delta-update benchmark on a shaped LAN of two namespace nodes (scripts/bench update).

The origin shares a workspace of ``--size`` (default 1 GiB) of random files
(``--files`` of them) and a 1 MiB ``config.bin``; the client clones it (timed; the
bytes its ``eth0`` received are counted, from ``/sys/class/net/eth0/statistics``).
Then, ``--runs`` times: the origin rewrites ``config.bin`` with new random bytes
and shares again, the client waits until it hears of the new version and runs
``aienv update`` (timed from the command's start to its end; the bytes its link
received counted the same way). Both links are shaped with ``tc tbf`` to ``--rate``
(default 1 Gbit/s) in both directions.

Bar (DESIGN.md): one changed 1 MiB file in a 1 GiB workspace sends < 2 % of the
workspace's bytes. Prints a Markdown section for docs/benchmarks.md (progress on
stderr); ``--json PATH`` writes the raw numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lan import AIENV, Host, Lan  # noqa: E402

MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def shape(lan: Lan, host: Host, rate: str) -> None:
    tbf = ["root", "tbf", "rate", rate, "burst", "512kb", "latency", "20ms"]
    subprocess.run(["tc", "qdisc", "replace", "dev", f"ae{lan.tag}h{host.index}", *tbf], check=True)
    done = host.run("tc", "qdisc", "replace", "dev", "eth0", *tbf)
    if done.returncode != 0:
        raise RuntimeError(f"tc in {host.ns}: {done.stderr}")


def received(host: Host) -> int:
    done = host.run("ip", "-s", "-j", "link", "show", "eth0")  # netlink: this namespace's
    return int(json.loads(done.stdout)[0]["stats64"]["rx"]["bytes"])


def timed(host: Host, *args: str) -> tuple[float, int, str]:
    """Seconds an ``aienv`` command took, the bytes the host's link received meanwhile,
    and its output."""
    before = received(host)
    start = time.monotonic()
    done = host.cli(*args, timeout=3600)
    return time.monotonic() - start, received(host) - before, done.stdout


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"not within {timeout} s: {what}")


def make(folder: Path, size: int, files: int) -> int:
    folder.mkdir(parents=True)
    (folder / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: big\nversion: 1.0.0\n")
    each = size // files
    (folder / "model").mkdir()
    for i in range(files):
        with (folder / "model" / f"shard-{i:03}.bin").open("wb") as out:
            left = each
            while left:
                chunk = os.urandom(min(left, 16 * MIB))
                out.write(chunk)
                left -= len(chunk)
    (folder / "config.bin").write_bytes(os.urandom(MIB))
    return each * files + MIB


def pending(host: Host) -> dict[str, Any] | None:
    data = json.loads(host.cli("show", "big", "--json").stdout)
    return data.get("update")  # type: ignore[no-any-return]


def run(opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"updates": []}
    with Lan(root / "hosts", 2) as lan:
        origin, client = lan.hosts
        for host in lan.hosts:
            shape(lan, host, opts.rate)
        origin.start("origin", interval=1.0)
        client.start("client", interval=1.0)
        total = make(root / "big", opts.size, opts.files)
        log(f"workspace: {total / MIB:.0f} MiB in {opts.files + 2} files; sharing")
        origin.cli("create", "big", "--from", str(root / "big"), timeout=3600)
        origin.cli("share", "big", timeout=3600)
        wait(lambda: "origin" in client.cli("peers").stdout, 10, "the client sees the origin")
        seconds, wire, _ = timed(client, "clone", "origin/big", "--no-launch")
        out["clone"] = {"seconds": seconds, "received": wire}
        out["size"] = json.loads(client.cli("show", "big", "--json").stdout)["archive"]
        log(f"full clone: {seconds:.2f} s, {wire / MIB:.1f} MiB on the link")
        for n in range(opts.runs):
            version = f"1.{n + 1}.0"
            root_ws = origin.home / "workspaces" / "big"
            (root_ws / "config.bin").write_bytes(os.urandom(MIB))
            manifest = f"apiVersion: aienv/v1\nname: big\nversion: {version}\n"
            (root_ws / "workspace.yaml").write_text(manifest)
            origin.cli("share", "big", timeout=3600)
            wait(lambda v=version: (p := pending(client)) and p["version"] == v, 30, version)
            estimate = pending(client)["estimate"]  # type: ignore[index]
            seconds, wire, text = timed(client, "update", "big", "--json")
            result = json.loads(text)
            out["updates"].append(
                {
                    "seconds": seconds,
                    "received": wire,
                    "estimate": estimate,
                    "swarm_received": result["received"],
                    "reused": result["reused"],
                    "archive": result["size"],
                    "steps": result["steps"],
                }
            )
            log(
                f"update to {version}: {seconds:.2f} s, {wire / MIB:.2f} MiB on the link, "
                f"steps {result['steps']}"
            )
    out["workspace_bytes"] = total
    return out


def report(opts: argparse.Namespace, data: dict[str, Any]) -> str:
    total = data["workspace_bytes"]
    ups = data["updates"]
    wire = statistics.median(u["received"] for u in ups)
    secs = statistics.median(u["seconds"] for u in ups)
    clone = data["clone"]
    share = wire / total
    lines = [
        f"### Delta update ({datetime.date.today().isoformat()}, scripts/bench update)",
        "",
        f"{platform.node()}: {os.cpu_count()} cores, links shaped to {opts.rate} both ways;"
        f" a workspace of {total / MIB:.0f} MiB ({opts.files} random files and a 1 MiB"
        f" `config.bin`); each run rewrites `config.bin` on the origin and updates the"
        f" clone. Bytes are what the client's `eth0` received (HTTP and discovery"
        f" included); medians of {len(ups)} updates.",
        "",
        "| | time | bytes on the client's link | of the workspace |",
        "|---|---|---|---|",
        f"| full clone | {clone['seconds']:.2f} s | {clone['received'] / MIB:.1f} MiB |"
        f" {clone['received'] / total:.1%} |",
        f"| update, one 1 MiB file changed | {secs:.2f} s | {wire / MIB:.2f} MiB |"
        f" **{share:.2%}** |",
        "",
        f"Bar: < 2 % of the workspace's bytes — **{'met' if share < 0.02 else 'missed'}**."
        f" The update took {secs / clone['seconds']:.1%} of the full clone's time.",
        "",
        "Where an update's time goes (medians, seconds, as the node reports them): "
        + ", ".join(
            f"{key} {statistics.median(u['steps'].get(key, 0.0) for u in ups):.3f}"
            for key in ups[0]["steps"]
        )
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024 * MIB, help="workspace bytes")
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", default="1gbit")
    parser.add_argument("--json", type=Path)
    finish(parser.parse_args(), run, report, "update")


def finish(
    opts: argparse.Namespace,
    run_: Callable[[argparse.Namespace, Path], dict[str, Any]],
    report_: Callable[[argparse.Namespace, dict[str, Any]], str],
    name: str,
) -> None:
    """Run a benchmark in a temporary folder, keep its raw numbers (``--json``) and
    print its Markdown section."""
    if not Path(AIENV).exists():
        raise SystemExit(f"{AIENV} not found: set up the checkout first (scripts/test)")
    with tempfile.TemporaryDirectory(prefix=f"aienv-bench-{name}-") as tmp:
        data = run_(opts, Path(tmp))
    if opts.json:
        opts.json.write_text(json.dumps(data, indent=2))
    print(report_(opts, data))


if __name__ == "__main__":
    main()
