"""Discovery benchmark on a LAN of network namespaces (run it with scripts/bench discovery).

Measures, with the node's default 10 s announcement interval:
- share → visible on a peer (from the share request to the peer's API listing it),
  against a baseline: one raw multicast datagram from the same namespace to the peer's;
- graceful leave (SIGTERM) → gone on the peer; crash (SIGKILL) → expired on the peer;
- an idle node's RSS and CPU over a minute, and the floors under that RSS: a fresh
  interpreter with only the libraries an idle node needs, and one with every module
  ``aienv serve`` imports.
Prints a Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lan import Host, Lan  # noqa: E402

DRIVER = """
import sys, time, httpx
b = "http://127.0.0.1:37778/api/v1/workspaces/hello/"
for line in sys.stdin:
    t0 = time.time()
    httpx.post(b + line.strip(), timeout=30).raise_for_status()
    print(t0, flush=True)
"""

MCAST_RECV = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 37999))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("239.255.77.78"), socket.inet_aton(sys.argv[1])))
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    data, _ = s.recvfrom(100)
    print(time.time() - float(data), flush=True)
"""

MCAST_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(int(sys.argv[2])):
    s.sendto(repr(time.time()).encode(), ("239.255.77.78", 37999))
    time.sleep(0.05)
"""


# what the idle node cannot do without: its event loop, TLS and SQLite, HTTP both ways,
# signatures and certificates, models, DNS-SD, the sampler, manifests, announcements
FLOOR = (
    "import asyncio, ssl, sqlite3, json, zlib; import aiohttp, aiohttp.web; "
    "from cryptography.hazmat.primitives.asymmetric import ed25519; "
    "from cryptography import x509; import pydantic, zeroconf.asyncio, psutil, yaml, zstandard"
)
NODE_IMPORTS = "import aienv.cli.main, aienv.node"
RSS_AFTER = (
    "; import gc; gc.collect(); "
    "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')))"
)


def imports_rss(code: str) -> float:
    """RSS (MiB) of a fresh interpreter once ``code`` has run: the median of three."""
    out = []
    for _ in range(3):
        res = subprocess.run(
            [sys.executable, "-c", code + RSS_AFTER], check=True, capture_output=True, text=True
        )
        out.append(int(res.stdout) / 1024)
    return statistics.median(out)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


def baseline(a: Host, b: Host, n: int) -> list[float]:
    recv = subprocess.Popen(
        b.nsenter(sys.executable, "-c", MCAST_RECV, b.ip, str(n)), stdout=subprocess.PIPE, text=True
    )
    assert recv.stdout is not None
    assert recv.stdout.readline().strip() == "ready"
    subprocess.run(a.nsenter(sys.executable, "-c", MCAST_SEND, a.ip, str(n)), check=True)
    out = [float(line) for line in recv.stdout.read().split()]
    recv.wait()
    return out


def visible(b: Host, present: bool) -> float:
    while True:
        peers = httpx.get(f"{b.url}/api/v1/peers", timeout=5).json()["peers"]
        names = {w["name"] for p in peers if p["name"] == "alpha" for w in p["workspaces"]}
        if ("hello" in names) == present:
            return time.time()
        time.sleep(0.002)


def alpha_gone(b: Host) -> float:
    while True:
        peers = httpx.get(f"{b.url}/api/v1/peers", timeout=5).json()["peers"]
        if not any(p["name"] == "alpha" for p in peers):
            return time.time()
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--crash-samples", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="aienv-bench-"))
    lan = Lan(root, 2)
    a, b = lan.hosts
    try:
        a.start("alpha", interval=10.0)
        b.start("beta", interval=10.0)
        a.cli("create", "hello", "--from", str(REPO / "workspaces" / "hello-web"))
        base = baseline(a, b, args.samples)

        driver = subprocess.Popen(
            a.nsenter(sys.executable, "-c", DRIVER),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert driver.stdin is not None and driver.stdout is not None
        share: list[float] = []
        for _ in range(args.samples):
            driver.stdin.write("share\n")
            driver.stdin.flush()
            t0 = float(driver.stdout.readline())
            share.append(visible(b, True) - t0)
            driver.stdin.write("unshare\n")
            driver.stdin.flush()
            driver.stdout.readline()
            visible(b, False)
        driver.stdin.close()
        driver.wait()

        leave: list[float] = []
        crash: list[float] = []
        for sig, bucket, n in (
            (signal.SIGTERM, leave, args.samples // 4),
            (signal.SIGKILL, crash, args.crash_samples),
        ):
            for _ in range(n):
                while not any(p["name"] == "alpha" for p in b.api("/peers").json()["peers"]):
                    time.sleep(0.01)
                time.sleep(0.5)
                assert a.proc is not None
                t0 = time.time()
                a.proc.send_signal(sig)  # measure what the peer sees, not the node's exit
                bucket.append(alpha_gone(b) - t0)
                a.proc.wait(30)
                a.start("alpha", interval=10.0)

        time.sleep(5)
        assert a.proc is not None
        node = psutil.Process(a.proc.pid)  # nsenter execs the node: same pid
        cpu0 = sum(node.cpu_times()[:2])
        t0 = time.monotonic()
        rss = []
        while time.monotonic() - t0 < args.idle_seconds:
            rss.append(node.memory_info().rss)
            time.sleep(1)
        cpu = (sum(node.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    finally:
        lan.close()
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        ("raw multicast datagram A→B (baseline)", base, None),
        ("share → visible on peer", share, "p50 < 0.5 s, p99 < 2 s"),
        ("graceful leave → gone on peer", leave, "< 1 s"),
        ("crash (SIGKILL) → expired on peer", crash, "≤ 30 s"),
    ]
    print("| measurement | samples | p50 | p99 | max | bar |")
    print("|---|---|---|---|---|---|")
    for name, values, bar in rows:
        print(
            f"| {name} | {len(values)} | {ms(statistics.median(values))} | {ms(pct(values, 0.99))} "
            f"| {ms(max(values))} | {bar or '—'} |"
        )
    ratio = statistics.median(share) / statistics.median(base)
    print(
        f"\nshare→visible p50 is {ratio:.0f}x the raw datagram p50 "
        "(it includes the share request, packing, the HTTP reply and the peer's API poll)."
    )
    print(
        f"\nidle node over {args.idle_seconds:.0f} s: "
        f"RSS median {statistics.median(rss) / 2**20:.1f} MiB "
        f"(bar < 60 MB), CPU {cpu * 100:.2f} % of a core (bar < 0.5 %)"
    )
    print(
        f"\nfloors, a fresh interpreter each: the libraries the idle node needs "
        f"{imports_rss(FLOOR):.1f} MiB; every module `aienv serve` imports before it "
        f"starts {imports_rss(NODE_IMPORTS):.1f} MiB; Python alone {imports_rss('pass'):.1f} MiB"
    )
    print("\n" + json.dumps({"share": share, "baseline": base, "leave": leave, "crash": crash}))


if __name__ == "__main__":
    main()
