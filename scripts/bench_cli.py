"""CLI latency benchmark (run it with scripts/bench cli): ``aienv list`` against a
running node, the bar being a median under 150 ms.

Starts a real node (``aienv serve`` on loopback, inside the isolated network
namespace that ``scripts/bench`` makes, with a temporary home), creates a
workspace from ``workspaces/hello-web``, then runs ``aienv list`` N times as a
subprocess (``AIENV_URL`` pointing at the node) and prints its median, p90 and
minimum wall time, beside two baselines run the same way: ``python -c pass``
(the interpreter alone) and ``python -c 'import aienv.cli.main'`` (the CLI's
imports). Each is run once before it is timed, with bytecode caching on (as a
user's Python runs; ``PYTHONDONTWRITEBYTECODE`` would recompile every module
on each run). The node is stopped by its pid and the home removed at the end.
Prints a Markdown section for docs/benchmarks.md.

``--cli-src DIR`` times the CLI of another source tree (a ``git archive`` of
another commit, say: it goes first on ``PYTHONPATH``), ``--node-src DIR``
runs the node from one, both with this virtualenv's packages.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIENV = str(Path(sys.executable).with_name("aienv"))
PORT = 37778


def wait_up(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited:\n{log.read_text(errors='replace')}")
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
        try:
            conn.request("GET", "/api/v1/node")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise SystemExit(f"the node did not come up:\n{log.read_text(errors='replace')}")


def timed(run: Callable[[], None], n: int) -> list[float]:
    run()  # once to warm the page cache and the node
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def command(args: list[str], env: dict[str, str], cwd: Path) -> Callable[[], None]:
    """Run from ``cwd``, away from the checkout: ``python -c`` imports from its folder first."""

    def run() -> None:
        subprocess.run(args, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)

    return run


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30, help="runs of each command (default 30)")
    parser.add_argument("--cli-src", type=Path, help="time the aienv package in this folder")
    parser.add_argument("--node-src", type=Path, help="run the node from this folder")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="aienv-bench-cli-"))
    log = home / "node.log"
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "AIENV_URL": f"http://127.0.0.1:{PORT}",
        "AIENV_HOME": str(home),
        "AIENV_SAMPLE_INTERVAL": "0",
    }
    node_env = {**env, "PYTHONPATH": str(args.node_src.resolve())} if args.node_src else env
    if args.cli_src:
        env["PYTHONPATH"] = str(args.cli_src.resolve())
    with log.open("ab") as out:
        node = subprocess.Popen(
            [AIENV, "serve", "--home", str(home), "--no-dnssd", "--host", "127.0.0.1",
             "--interface", "lo", "--port", str(PORT)],
            stdout=out, stderr=subprocess.STDOUT, env=node_env,
        )  # fmt: skip
    try:
        wait_up(node, log)
        subprocess.run(
            [AIENV, "create", "hello", "--from", str(REPO / "workspaces" / "hello-web")],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        rows = [
            ("`python -c pass`", command([sys.executable, "-c", "pass"], env, home)),
            (
                "`python -c 'import aienv.cli.main'`",
                command([sys.executable, "-c", "import aienv.cli.main"], env, home),
            ),
            ("`aienv list`", command([AIENV, "list"], env, home)),
        ]
        results = [(name, timed(run, args.n)) for name, run in rows]
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        shutil.rmtree(home, ignore_errors=True)

    where = f"{platform.node()}, Python {platform.python_version()}"
    print(f"## CLI latency ({args.n} runs each, {where})")
    print()
    print("| command | median | p90 | min |")
    print("|---|---|---|---|")
    for name, times in results:
        figures = [statistics.median(times), pct(times, 0.9), min(times)]
        print(f"| {name} | " + " | ".join(ms(v) for v in figures) + " |")
    median = statistics.median(results[-1][1])
    print()
    verdict = "met" if median < 0.150 else "NOT met"
    print(f"bar: `aienv list` median < 150 ms: {verdict} ({ms(median)})")


if __name__ == "__main__":
    main()
