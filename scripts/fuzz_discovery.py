"""Long fuzzing of the discovery decoder and service (run it with scripts/fuzz).

Runs the ``test_fuzz_*`` properties of tests/unit/test_codec.py under the ``long``
Hypothesis profile (tests/unit/conftest.py: random, not derandomized) in rounds of about
``--round-seconds``, each with its own logged ``--hypothesis-seed`` so that any round can
be replayed, until ``--minutes`` are spent. Each property runs in its own pytest with an
equal share of the round, its examples sized from its speed in the previous round.
Counts come from Hypothesis's own statistics.
Stops at the first failure and prints it (the falsifying example, the seed). Prints a
Markdown summary for docs/benchmarks.md; ``--json PATH`` writes the raw numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTS = "tests/unit/test_codec.py"
FIRST_ROUND = 200  # examples per property in the first round, to measure the speed
STATS = re.compile(r"(\d+) passing(?: examples)?, (\d+) failing(?: examples)?, and (\d+) invalid")
TEST = re.compile(r"^\S*::(test_\w+):\s*$")
PHASE = re.compile(r"during (\w+) phase \(([\d.]+) seconds\)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


KEYS = ("passing", "failing", "invalid", "seconds")
Stats = dict[str, float]


def empty() -> Stats:
    return dict.fromkeys(KEYS, 0.0)


def add(total: Stats, more: Stats) -> None:
    for key in KEYS:
        total[key] += more[key]


def parse_stats(output: str) -> dict[str, Stats]:
    """Per property: passing / failing / invalid examples and seconds of its generate phase."""
    out: dict[str, Stats] = {}
    name = None
    phase = ""
    for line in output.splitlines():
        if m := TEST.match(line.strip()):
            name = m[1]
            out.setdefault(name, empty())
        elif name and (m := PHASE.search(line)):
            phase = m[1]
            if phase == "generate":
                out[name]["seconds"] += float(m[2])
        elif name and phase == "generate" and (m := STATS.search(line)):
            for key, value in zip(("passing", "failing", "invalid"), m.groups(), strict=True):
                out[name][key] += int(value)
    return out


def properties(select: str) -> list[str]:
    """The names of the property tests ``-k select`` picks."""
    cmd = [sys.executable, "-m", "pytest", TESTS, "-k", select, "-q", "--collect-only"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [line.split("::")[1] for line in out.splitlines() if "::" in line]


def run(name: str, seed: int, examples: int) -> tuple[int, str, float]:
    """One property, ``examples`` random examples from ``seed``, in its own pytest;
    its exit code, output and wall seconds."""
    env = {**os.environ, "AIENV_FUZZ": "long", "AIENV_FUZZ_EXAMPLES": str(examples)}
    cmd = [sys.executable, "-m", "pytest", f"{TESTS}::{name}", "-q", "-p", "no:cacheprovider"]
    cmd += ["--hypothesis-show-statistics", f"--hypothesis-seed={seed}", "--timeout=0"]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    return res.returncode, res.stdout + res.stderr, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="time to spend (5)")
    parser.add_argument("--round-seconds", type=float, default=60.0, help="one round (60)")
    parser.add_argument("-k", dest="select", default="fuzz", help="pytest -k (fuzz)")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args()
    names = properties(args.select)
    if not names:
        raise SystemExit(f"no test in {TESTS} matches -k {args.select}")
    started = time.monotonic()
    deadline = started + args.minutes * 60
    totals = {name: empty() for name in names}
    examples = dict.fromkeys(names, FIRST_ROUND)
    rounds: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    overhead = dict.fromkeys(names, 0.0)  # seconds of a run beyond generating examples
    while failed is None:
        share = min(args.round_seconds, deadline - time.monotonic()) / len(names)
        if rounds and share < 1 + max(overhead.values()):
            break
        for name, c in (rounds[-1]["done"] if rounds else {}).items():
            if c["seconds"] > 0:  # size this round from the last one's speed
                examples[name] = max(
                    50, int(c["passing"] * (share - overhead[name]) / c["seconds"])
                )
        seed = random.SystemRandom().randrange(2**32)
        done: dict[str, Stats] = {}
        for name in names:
            rc, output, wall = run(name, seed, examples[name])
            done[name] = parse_stats(output).get(name, empty())
            overhead[name] = max(0.0, wall - done[name]["seconds"])
            add(totals[name], done[name])
            if rc != 0:
                failed = {"test": name, "seed": seed, "examples": examples[name]}
                failed["output"] = output[-20000:]
                print(output[-20000:], file=sys.stderr)
                log(
                    f"FAILED: replay with AIENV_FUZZ=long AIENV_FUZZ_EXAMPLES={examples[name]} "
                    f"scripts/test {TESTS}::{name} --hypothesis-seed={seed}"
                )
                break
        rounds.append({"seed": seed, "examples": dict(examples), "done": done})
        log(
            f"round {len(rounds)}, seed {seed}: "
            + ", ".join(
                f"{n.removeprefix('test_fuzz_')} {int(c['passing'])}" for n, c in done.items()
            )
        )
    elapsed = time.monotonic() - started
    print("\n".join(summary(args.minutes, totals, rounds, elapsed, failed)))
    if args.json:
        data = {"totals": totals, "rounds": rounds, "seconds": elapsed, "failed": failed}
        args.json.write_text(json.dumps(data, indent=1))
    sys.exit(1 if failed else 0)


def summary(
    minutes: float,
    totals: dict[str, Stats],
    rounds: list[dict[str, Any]],
    elapsed: float,
    failed: dict[str, Any] | None,
) -> list[str]:
    hypothesis = subprocess.run(
        [sys.executable, "-c", "import hypothesis; print(hypothesis.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    out = [
        f"### Fuzzing the discovery decoder ({datetime.date.today().isoformat()})",
        "",
        f"`scripts/fuzz --minutes {minutes:g}`: {len(rounds)} rounds of the "
        f"`test_fuzz_*` properties of `{TESTS}` (Hypothesis {hypothesis}, random, a seed "
        f"per round, each property given an equal share of the time), "
        f"{elapsed / 60:.1f} min in all, Python {platform.python_version()}.",
        "",
        "| property | examples | invalid (filtered) | failing | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, c in sorted(totals.items()):
        out.append(
            f"| `{name}` | {c['passing']:,.0f} | {c['invalid']:,.0f} | {c['failing']:,.0f} | "
            f"{c['seconds']:.0f} |"
        )
    total = sum(c["passing"] for c in totals.values())
    failing = sum(c["failing"] for c in totals.values())
    out.append(f"| all | {total:,.0f} |  | {failing:,.0f} |  |")
    out.append("")
    seeds = ", ".join(str(r["seed"]) for r in rounds)
    out.append(
        (f"**Failed**: `{failed['test']}`, seed {failed['seed']}" if failed else "No failure")
        + f". Seeds: {seeds}."
    )
    return out


if __name__ == "__main__":
    main()
