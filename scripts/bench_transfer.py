"""Transfer benchmark on a shaped LAN of network namespaces (run it with scripts/bench transfer).

One seeder node and up to ten client nodes, each in its own network namespace on one
bridge. Every host's link is shaped with ``tc tbf`` to ``--rate`` (default 1 Gbit/s) in
both directions: on ``eth0`` inside the host's namespace (what it sends) and on its
bridge-side veth (what it receives). nginx runs in the seeder's namespace and serves
the very same archive files the seeder node serves; the baseline for every clone is
``curl -s -o FILE`` of that archive, run in the same client namespace, in the same run.

Scenarios (``--scenario``, repeatable; all by default):

- ``incompressible``: 2 GiB of random ``*.safetensors``; clone wall time vs curl wall
  time of its archive. Bar: clone <= 1.05 x curl. Also the disk the clone took: the
  client node's home growth (allocated blocks) / the unpacked size. Bar: <= 1.10.
- ``compressible``: 500 MiB of generated source code, JSON lines and Markdown (seeded,
  deflates ~3.1x); effective rate = unpacked bytes / clone wall time, vs the nominal
  link rate and vs curl's rate on the archive. Bar: >= 2 x the link rate. Also the
  files' own floor on this disk: ``cp -r`` of the installed tree beside it; and the
  rate ``dd`` writes a new file into memory the machine has not used lately, then
  into memory just freed (a virtual machine's host may take free memory back, and
  fault it in again page by page when it is next written).
- ``concurrent``: 10 clients (``AIENV_MAX_SOURCES=1``) clone one 200 MiB workspace at
  once; aggregate = bytes / (last finish - first start), vs the link and vs 10 parallel
  curls; the seeder node's peak RSS (``VmHWM``, reset just before). Bars: >= 95 % of the
  link; RSS < 150 MB.
- ``swarm``: 8 clients clone one 1 GiB workspace at once, with default settings (many
  sources) and with ``AIENV_MAX_SOURCES=1`` (``--reference-runs`` times), vs one clone
  alone. Bar: many sources <= 3 x one clone.
- ``cut``: one 2 GiB clone (``--cut-size``) whose seeder link goes down for 5 s at half
  way, and one whose seeder node restarts at half way; wall time vs an uninterrupted
  clone, and bytes downloaded twice (the clone's ``bytes_received`` - archive size).
  Bar: it finishes, with < 5 % downloaded twice.

A clone is timed inside the client's namespace, from just before ``POST /api/v1/clones``
until the node's live feed (``GET /api/v1/stream``, opened before the POST) tells of its
change to ``installed``; it includes verification and extraction, as a user waits for
them. The feed's progress events (twice a second) give its timeline and its first byte
to half a second. (Until 2026-12-05 drivers polled the job every 30 ms: eight of them on
two cores took enough CPU to slow the swarm they measured.) The ``cut`` scenario's first
clone still polls, to act on it half way. Every measured clone runs on client nodes
started afresh with empty homes (a node keeps what it downloaded and would serve a
second clone of the same digest from its own cache), after one warm-up clone and curl
per archive that fill the seeder's caches. A tree of many files is not deleted before
the end of the run but moved to a trash folder (see ``Fleet.discard``). Nodes import a
copy of ``aienv/`` taken at the start, so a run measures one version of the code even
while the tree changes (``--no-snapshot``).
CPU is accounted per process (client node, seeder node, curl, nginx) and for the whole
machine; a scenario during which processes this benchmark did not start took CPU is
flagged as disturbed.

``--scale`` multiplies every size (``--scale 0.05`` is a quick smoke run). Medians over
``--runs``. Prints a Markdown section for docs/benchmarks.md (progress goes to stderr);
``--json PATH`` writes the raw numbers, with each clone's final document and progress.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lan import Host, Lan  # noqa: E402

MiB = 1024**2
GiB = 1024**3
TRASH_FROM = 1000  # files in a tree that is moved aside rather than deleted (Fleet.discard)
SCENARIOS = ("incompressible", "compressible", "concurrent", "swarm", "cut")
CLIENTS_NEEDED = {"incompressible": 1, "compressible": 1, "concurrent": 10, "swarm": 8, "cut": 1}
NGINX_PORT = 8080
POLL = 0.03
DISCOVERY_WAIT = 3.0
OUTAGE = 5.0
SINGLE_SOURCE = {"AIENV_MAX_SOURCES": "1"}

# -- driver: runs inside a host's namespace, talks to its node on loopback ------------

DRIVER = r"""
import contextlib, json, os, resource, subprocess, sys, time
import httpx

API = "http://127.0.0.1:37778/api/v1"
DONE = {"installed", "running", "failed", "cancelled"}


def emit(kind, **fields):
    print(kind, json.dumps(fields), flush=True)


def api(a):
    with httpx.Client(base_url=API, timeout=None) as c:
        r = c.request(a["method"], a["path"], json=a.get("body"))
    emit("result", status=r.status_code, body=r.json() if r.content else None)


def polled(c, doc, poll):  # the job as a poll every `poll` seconds sees it
    while True:
        time.sleep(poll)
        yield c.get(f"/clones/{doc['id']}").json()

# the job as the node's live feed tells of it: read again at each change of its state,
# and from each progress event (twice a second while it runs)
def streamed(c, lines, doc):
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event in ("hello", "change", "progress"):
            data = json.loads(line[6:])
            if event == "progress":
                yield from (j for j in data["clones"] if j["id"] == doc["id"])
            elif event == "hello" or data["key"] == doc["id"]:  # a resync, or its change
                yield c.get(f"/clones/{doc['id']}").json()

def clone(a):
    with httpx.Client(base_url=API, timeout=60) as c, contextlib.ExitStack() as stack:
        if a.get("mark") is None:  # (the cut scenario's clone polls: no feed left unread)
            lines = stack.enter_context(c.stream("GET", "/stream")).iter_lines()
            next(line for line in lines if line == "event: hello")  # subscribed
        else:
            c.get("/node")
        emit("ready")
        sys.stdin.readline()
        t0 = time.time()
        r = c.post("/clones", json={"source": a["source"], "as": a["as"], "launch": False})
        if r.status_code not in (201, 202):
            emit("result", start=t0, end=time.time(), doc={"state": "failed", "error": r.text})
            return
        doc, mark, deadline = r.json(), a.get("mark"), t0 + a["timeout"]
        seen, timeline, downloaded = {}, [], None
        updates = polled(c, doc, a["poll"]) if mark is not None else streamed(c, lines, doc)
        while doc["state"] not in DONE:
            if time.time() > deadline:
                c.delete(f"/clones/{doc['id']}")
                doc["state"], doc["error"] = "failed", "timed out (benchmark)"
                break
            doc = next(updates)
            now, done, total = time.time(), doc.get("bytes_done", 0), doc.get("bytes_total") or 0
            new = doc["state"] not in seen
            seen.setdefault(doc["state"], now - t0)
            if new or not timeline or now - t0 - timeline[-1][0] >= 0.25:
                timeline.append([round(now - t0, 3), done])
            if downloaded is None and total and done >= total:
                downloaded = now - t0
            if mark is not None and total and done >= mark * total:
                emit("mark", bytes_done=done)
                mark = None
        end = time.time()
        emit("result", start=t0, end=end, doc=doc, seen=seen, timeline=timeline,
             downloaded=downloaded)


def curl(a):
    emit("ready")
    sys.stdin.readline()
    t0 = time.time()
    p = subprocess.run(["curl", "-sS", "-f", "-o", a["out"], a["url"]], capture_output=True)
    t1 = time.time()
    size = os.path.getsize(a["out"]) if os.path.exists(a["out"]) else 0
    if os.path.exists(a["out"]):
        os.unlink(a["out"])
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime
    emit("result", start=t0, end=t1, bytes=size, rc=p.returncode, error=p.stderr.decode(), cpu=cpu)


{"api": api, "clone": clone, "curl": curl}[sys.argv[1]](json.loads(sys.argv[2]))
"""


class Job:
    """One driver process in a host's namespace; line protocol ``KIND JSON``."""

    def __init__(self, host: Host, mode: str, args: dict[str, Any]) -> None:
        self.host = host
        self.stashed: dict[str, Any] | None = None  # a result read early
        self.proc = subprocess.Popen(
            host.nsenter(sys.executable, "-c", DRIVER, mode, json.dumps(args)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self) -> tuple[str, dict[str, Any]]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"driver in {self.host.ns} exited {self.proc.returncode}")
        kind, _, payload = line.partition(" ")
        return kind, json.loads(payload)

    def expect(self, kind: str) -> dict[str, Any]:
        got, payload = self.read()
        if got != kind:
            raise RuntimeError(f"driver in {self.host.ns}: expected {kind}, got {got} {payload}")
        return payload

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        out = self.stashed if self.stashed is not None else self.expect("result")
        self.proc.wait()
        return out


def api(host: Host, method: str, path: str, body: Any = None) -> Any:
    """An admin call to ``host``'s node, from inside its namespace; raises unless 2xx."""
    res = Job(host, "api", {"method": method, "path": path, "body": body}).result()
    if not 200 <= res["status"] < 300:
        raise RuntimeError(f"{method} {path} on {host.ns}: {res['status']} {res['body']}")
    return res["body"]


def together(jobs: list[Job]) -> None:
    """Start every job at once: all are ready (imports done, connected) before any goes."""
    for job in jobs:
        job.expect("ready")
    for job in jobs:
        job.go()


# -- units ----------------------------------------------------------------------


def rate_bits(rate: str) -> float:
    """A tc rate (``1gbit``, ``500mbit``) in bits per second."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps)", rate.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"{rate!r}: give a tc rate like 1gbit or 500mbit")
    factor = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
    return float(m[1]) * factor * (8 if m[3] == "bps" else 1)


def scaled(size: int, scale: float) -> int:
    return max(MiB, round(size * scale / MiB) * MiB)


def size_text(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def mbit(bytes_per_s: float) -> str:
    return f"{bytes_per_s * 8 / 1e6:.0f} Mbit/s"


def mb_text(rates: list[float]) -> str:
    return ", ".join(f"{v / 1e6:.0f}" for v in rates) or "—"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def secs(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def runs_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values) or "—"


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


# -- workspaces -------------------------------------------------------------------


def manifest(name: str, description: str, folders: list[str]) -> str:
    data = "".join(f"  - name: {f}\n    path: {f}\n" for f in folders)
    return (
        f"apiVersion: aienv/v1\nname: {name}\nversion: 1.0.0\n"
        f"description: {json.dumps(description)}\ndata:\n{data}"
    )


def write_random(folder: Path, size: int, shards: int = 4) -> None:
    """``size`` bytes of os.urandom in ``shards`` model files (incompressible)."""
    (folder / "weights").mkdir(parents=True)
    per = size // shards
    for i in range(1, shards + 1):
        with (folder / "weights" / f"model-{i:05d}.safetensors").open("wb") as out:
            left = per
            while left:
                left -= out.write(os.urandom(min(left, 16 * MiB)))
    (folder / "workspace.yaml").write_text(
        manifest("bench-random", "Random bytes: incompressible weights.", ["weights"])
    )


LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_FREQ = [12, 9, 8, 7.5, 7, 6.7, 6.3, 6, 6, 4.3, 2.8, 2.8, 2.4, 2.4, 2.2, 2, 2, 1.9, 1.5]
LETTER_FREQ += [1, 0.8, 0.15, 0.15, 0.1, 0.1, 0.07]
TYPES = ["int", "str", "float", "bool", "bytes", "None", "list[str]", "dict[str, Any]", "Path"]


class Corpus:
    """Deterministic text that deflates like real code and data (about 3-4x).

    Pools of Python lines, JSON records and Markdown paragraphs are generated from a
    Zipf-weighted vocabulary; files are assembled by drawing from the pools, so deflate
    sees realistic tokens and never long-range repeats within its 32 KiB window.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        words = sorted({self._word(2, 10) for _ in range(6000)})
        rng.shuffle(words)
        self.words = words
        self.word_cum = list(accumulate(1 / (i + 1) for i in range(len(words))))
        self.idents = ["_".join(rng.choices(words[:800], k=rng.randint(1, 3))) for _ in range(3000)]
        self.ident_cum = list(accumulate(1 / (i + 1) ** 0.8 for i in range(len(self.idents))))
        self.python = self._python_lines(60000)
        self.records = [self._record() for _ in range(30000)]
        self.paragraphs = [self._paragraph() for _ in range(12000)]

    def _word(self, lo: int, hi: int) -> str:
        return "".join(self.rng.choices(LETTERS, LETTER_FREQ, k=self.rng.randint(lo, hi)))

    def _ident(self) -> str:
        return self.rng.choices(self.idents, cum_weights=self.ident_cum)[0]

    def _prose(self, lo: int, hi: int) -> str:
        k = self.rng.randint(lo, hi)
        return " ".join(self.rng.choices(self.words, cum_weights=self.word_cum, k=k))

    def _python_line(self, indent: int) -> str:
        rng, p, i = self.rng, "    " * indent, self._ident
        kind = rng.randrange(10)
        if kind == 0:
            params = ", ".join(f"{i()}: {rng.choice(TYPES)}" for _ in range(rng.randint(0, 3)))
            return f"{p}def {i()}({params}) -> {rng.choice(TYPES)}:"
        lines = [
            "",
            f"{p}{i()} = {i()}.{i()}({i()}, {rng.randint(0, 4096)})",
            f"{p}{i()} = {i()}.{i()}({i()}, {rng.randint(0, 4096)})",
            f"{p}# {self._prose(3, 12)}",
            f"{p}return {i()}",
            f"{p}if {i()} is not None and {i()} > {rng.randint(0, 100)}:",
            f"{p}for {i()} in {i()}:",
            f"{p}self.{i()} = {i()}",
            f'{p}raise ValueError(f"{self._prose(3, 8)} {{{i()}!r}}")',
        ]
        return lines[kind - 1]

    def _python_lines(self, n: int) -> list[str]:
        out, indent = [], 0
        for _ in range(n):
            line = self._python_line(indent)
            out.append(line)
            if line.endswith(":"):
                indent = min(indent + 1, 4)
            elif self.rng.random() < 0.2:
                indent = max(indent - 1, 0)
        return out

    def _record(self) -> str:
        rng = self.rng
        return json.dumps(
            {
                "id": rng.randint(0, 10**9),
                "name": self._ident(),
                "tags": rng.choices(self.words[:300], k=rng.randint(0, 4)),
                "score": round(rng.random(), 4),
                "ts": 1_700_000_000 + rng.randint(0, 10**7),
                "text": self._prose(5, 30),
            }
        )

    def _paragraph(self) -> str:
        if self.rng.random() < 0.1:
            return "## " + self._prose(2, 6).capitalize() + "\n"
        n = self.rng.randint(2, 6)
        return " ".join(self._prose(6, 20).capitalize() + "." for _ in range(n)) + "\n"

    def python_file(self, size: int) -> bytes:
        out: list[str] = []
        while sum(map(len, out)) + len(out) < size:
            start = self.rng.randrange(len(self.python) - 200)
            out.extend(self.python[start : start + self.rng.randint(20, 200)])
        return ("\n".join(out) + "\n").encode()

    def drawn(self, pool: list[str], size: int) -> bytes:
        out: list[str] = []
        total = 0
        while total < size:
            batch = self.rng.choices(pool, k=512)
            out.extend(batch)
            total += sum(map(len, batch)) + len(batch)
        return ("\n".join(out) + "\n").encode()


def write_text(folder: Path, size: int, seed: int = 20261121) -> None:
    """About ``size`` bytes: 45 % Python sources, 35 % JSON lines, 20 % Markdown."""
    corpus = Corpus(seed)
    rng = corpus.rng
    kinds: list[tuple[str, float, tuple[int, int], Callable[[int], bytes]]] = [
        ("src", 0.45, (2 * 1024, 64 * 1024), corpus.python_file),
        ("data", 0.35, (1 * MiB, 8 * MiB), lambda n: corpus.drawn(corpus.records, n)),
        ("docs", 0.20, (4 * 1024, 128 * 1024), lambda n: corpus.drawn(corpus.paragraphs, n)),
    ]
    for top, share, (lo, hi), make in kinds:
        budget, i = int(size * share), 0
        while budget > 0:
            data = make(min(budget, rng.randint(lo, max(lo, min(hi, budget)))))
            sub = folder / top / f"part{i // 200:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            ext = {"src": "py", "data": "jsonl", "docs": "md"}[top]
            (sub / f"{corpus.idents[i % len(corpus.idents)][:40]}-{i}.{ext}").write_bytes(data)
            budget -= len(data)
            i += 1
    (folder / "workspace.yaml").write_text(
        manifest("bench-text", "Generated code, JSON lines and prose.", ["src", "data", "docs"])
    )


# -- measurements -------------------------------------------------------------------


@dataclass(slots=True)
class Timed:
    start: float
    end: float
    bytes: int
    ok: bool
    error: str = ""
    doc: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float | None] = field(default_factory=dict)  # fraction of one core
    seeder_sent: int | None = None  # bytes on the seeder's link during the whole call
    event: dict[str, Any] | None = None  # what was done to it half way, if anything
    downloaded: float | None = None  # seconds from the start until bytes_done = total
    seen: dict[str, float] = field(default_factory=dict)  # state -> first seen (s)
    timeline: list[list[float]] = field(default_factory=list)  # [s, bytes_done]
    log_tail: str = ""  # the end of the client node's log, when it failed
    disk: int | None = None  # bytes the client's home grew by (a solo clone), settled
    disk_end: int | None = None  # the same, read as the clone ended
    settle: float | None = None  # seconds from the clone's end until ``disk`` was read

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def raw(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.seconds, 4), "bytes": self.bytes}
        out |= {"start": self.start, "end": self.end}
        if self.seen:
            first = next((t for t, done in self.timeline if done > 0), None)
            out |= {"downloaded": self.downloaded, "first_byte": first, "seen": self.seen}
            out["timeline"] = self.timeline
        if not self.ok:
            out |= {"error": self.error, "log_tail": self.log_tail}
        if "bytes_received" in self.doc:
            out["bytes_received"] = self.doc["bytes_received"]
        if self.seeder_sent is not None:
            out["seeder_sent"] = self.seeder_sent
        out["cpu"] = self.cpu
        if self.disk is not None:
            out |= {"disk": self.disk, "disk_end": self.disk_end, "settle": self.settle}
        if self.event is not None:
            out["event"] = self.event
        if self.doc:
            out["doc"] = self.doc
        return out


def span(items: list[Timed]) -> float:
    return max(t.end for t in items) - min(t.start for t in items)


def aggregate(items: list[Timed]) -> float:
    """Bytes per second over all items: total bytes / (last end - first start)."""
    return sum(t.bytes for t in items if t.ok) / span(items)


def machine_cpu() -> tuple[float, float, float, float]:
    """CPU seconds (all cores): in processes, in interrupts (the network), stolen by the
    hypervisor; and wall seconds times cores."""
    t = psutil.cpu_times()
    cores = os.cpu_count() or 1
    return t.user + t.nice + t.system, t.irq + t.softirq, t.steal, time.monotonic() * cores


def own_cpu() -> float:
    """CPU seconds of this benchmark and everything it started (nodes, nginx, curl...).

    A live process counts itself; one that ended counts in its parent's children times.
    """
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuMeter:
    """The machine's CPU since the meter was made: how busy, and how much of it was not us."""

    def __init__(self) -> None:
        self.machine = machine_cpu()
        self.own = own_cpu()

    def busy(self) -> float:
        """The busy fraction of all cores."""
        return self.report()["busy"]

    def report(self) -> dict[str, float]:
        now = machine_cpu()
        procs, irq, steal, capacity = (b - a for a, b in zip(self.machine, now, strict=True))
        own = own_cpu() - self.own
        capacity = max(capacity, 1e-9)
        return {
            "busy": (procs + irq) / capacity,
            "steal": steal / capacity,
            "others": max(0.0, procs - own) / capacity,  # processes this benchmark did not start
        }


def node_pid(host: Host) -> int:
    """The pid of the host's ``aienv serve`` (nsenter execs it in place, or forks it)."""
    assert host.proc is not None
    proc = psutil.Process(host.proc.pid)
    if proc.name() == "nsenter":
        proc = proc.children()[0]
    return proc.pid


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far; None if it is gone."""
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def core_share(pid: int | None, before: float | None, seconds: float) -> float | None:
    """The fraction of one core ``pid`` used since ``before`` (None if it restarted)."""
    after = cpu_seconds(pid)
    if before is None or after is None or seconds <= 0:
        return None
    return (after - before) / seconds


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class RssWatch(threading.Thread):
    """Samples a process's RSS every 50 ms; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            try:
                self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            except OSError:
                return


# -- the LAN ------------------------------------------------------------------------


@dataclass(slots=True)
class Archive:
    name: str
    digest: str
    size: int
    unpacked: int
    files: int


Disruption = Callable[[Job], dict[str, Any] | None]


class Fleet:
    """The shaped LAN: a seeder with nginx beside its node, and client nodes."""

    def __init__(self, root: Path, clients: int, rate: str) -> None:
        self.root = root
        self.rate = rate
        self.lan = Lan(root / "hosts", clients + 1)
        self.seeder, *self.clients = self.lan.hosts
        self.nginx: subprocess.Popen[bytes] | None = None
        self.www = root / "nginx" / "www"
        self.archives: dict[str, Archive] = {}
        self.solo: dict[str, list[Timed]] = {}  # one clone alone, default settings
        self.first: dict[str, float] = {}  # the first clone of each archive (warm-up)
        self.counter = 0
        self.trash = root / "trash"
        for host in self.lan.hosts:
            self.shape(host)

    # setup

    def shape(self, host: Host) -> None:
        tbf = ["root", "tbf", "rate", self.rate, "burst", "512kb", "latency", "20ms"]
        veth = f"ae{self.lan.tag}h{host.index}"
        subprocess.run(["tc", "qdisc", "replace", "dev", veth, *tbf], check=True)
        res = host.run("tc", "qdisc", "replace", "dev", "eth0", *tbf)
        if res.returncode != 0:
            raise RuntimeError(f"tc in {host.ns}: {res.stderr}")

    def shaped(self, host: Host) -> bool:
        veth = f"ae{self.lan.tag}h{host.index}"
        out = subprocess.run(
            ["tc", "qdisc", "show", "dev", veth], check=False, capture_output=True, text=True
        )
        return (
            "tbf" in out.stdout and "tbf" in host.run("tc", "qdisc", "show", "dev", "eth0").stdout
        )

    def start_seeder(self) -> None:
        self.seeder.start("seeder", interval=1.0)

    def fresh(self, n: int, env: dict[str, str]) -> list[Host]:
        """Clients 1..n as new nodes (empty homes) running with ``env``; the others stopped.

        A node keeps the archives it downloaded and serves a clone of the same digest from
        that cache, so every measurement starts from nodes that have never seen it.
        """
        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(self.renew, self.clients))
        for host in self.clients[:n]:
            host.extra_env = dict(env)
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # more would time out starting
            list(
                pool.map(lambda h: h.start(f"client{h.index - 1}", interval=1.0), self.clients[:n])
            )
        time.sleep(DISCOVERY_WAIT if n > 1 else 1.0)  # let the nodes hear each other
        return self.clients[:n]

    def renew(self, host: Host) -> None:
        """Stop the host's node and give it an empty home, the old one discarded."""
        host.stop()
        if host.home.exists():
            self.discard(host.home)
        host.home.mkdir(parents=True)

    def discard(self, path: Path) -> None:
        """Delete ``path`` now if it holds few files; else move it to the trash, which is
        deleted once the benchmark ends.

        Deleting thousands of files just before a measured clone would slow the clone:
        on ext4 without a journal (this machine's), creating a file walks past every
        inode of its block group freed in the last minutes (``recently_deleted()`` in
        the kernel), ~0.5 ms a file after the compressible tree was deleted. Large files
        are deleted at once: kept, their gigabytes would crowd the page cache, and the
        next clones' writes would pay for reclaiming it."""
        if sum(len(files) for _, _, files in os.walk(path)) < TRASH_FROM:
            shutil.rmtree(path)
            return
        self.trash.mkdir(exist_ok=True)
        self.counter += 1
        path.rename(self.trash / f"{self.counter}-{path.name}")

    def warm(self, ar: Archive) -> None:
        """A first clone and curl of ``ar``, not counted: caches filled, piece lists made."""
        if ar.name in self.first:
            return
        (client,) = self.fresh(1, {})
        self.curls([client], f"{ar.name}.zip")
        self.first[ar.name] = self.clones([client], ar)[0].seconds
        log(f"{ar.name}: first clone after sharing {self.first[ar.name]:.2f} s (not counted)")

    def start_nginx(self, probe_size: int) -> None:
        prefix = self.root / "nginx"
        self.www.mkdir(parents=True)
        for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / temp).mkdir()
        with (self.www / "probe.bin").open("wb") as out:
            left = probe_size
            while left:
                left -= out.write(os.urandom(min(left, 16 * MiB)))
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"error_log {prefix}/error.log warn;\npid {prefix}/nginx.pid;\n"
            "events { worker_connections 256; }\n"
            "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
            "  default_type application/octet-stream;\n"
            + "".join(f"  {t}_temp_path {prefix}/{t};\n" for t in ("proxy", "fastcgi", "uwsgi"))
            + f"  scgi_temp_path {prefix}/scgi;\n  client_body_temp_path {prefix}/body;\n"
            f"  server {{ listen {self.seeder.ip}:{NGINX_PORT}; root {self.www}; }}\n}}\n"
        )
        self.nginx = subprocess.Popen(
            self.seeder.nsenter("/usr/sbin/nginx", "-p", str(prefix), "-c", str(conf)),
            stderr=(prefix / "stderr.log").open("wb"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                raise RuntimeError(f"nginx exited: {(prefix / 'error.log').read_text()}")
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((self.seeder.ip, NGINX_PORT)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nginx did not come up")

    def close(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()
        self.lan.close()

    # workspaces

    def archive(self, kind: str, size: int) -> Archive:
        """A shared workspace on the seeder (made once), with its archive linked for nginx."""
        name = f"{kind}-{size // MiB}m"
        if name in self.archives:
            return self.archives[name]
        src = self.root / "src" / name
        t0 = time.monotonic()
        (write_random if kind == "random" else write_text)(src, size)
        t1 = time.monotonic()
        api(self.seeder, "POST", "/workspaces", {"name": name, "from": str(src)})
        self.discard(src)  # the node keeps its own copy
        t2 = time.monotonic()
        ws = api(self.seeder, "POST", f"/workspaces/{name}/share")
        t3 = time.monotonic()
        meta = ws["archive"]
        path = self.archive_file(meta["digest"])
        if path.stat().st_size != meta["size"]:
            raise RuntimeError(f"{path} is {path.stat().st_size} bytes, not {meta['size']}")
        (self.www / f"{name}.zip").symlink_to(path)
        log(
            f"{name}: generated in {t1 - t0:.1f} s, created in {t2 - t1:.1f} s, "
            f"packed in {t3 - t2:.1f} s: {size_text(meta['size'])} archive, "
            f"{meta['unpacked_size'] / meta['size']:.2f}x"
        )
        self.archives[name] = Archive(
            name, meta["digest"], meta["size"], meta["unpacked_size"], meta["files"]
        )
        return self.archives[name]

    def describe(self, ar: Archive) -> dict[str, Any]:
        keys = ("name", "digest", "size", "unpacked", "files")
        return {k: getattr(ar, k) for k in keys} | {"first_clone": self.first.get(ar.name)}

    def archive_file(self, digest: str) -> Path:
        path = self.seeder.home / "archives" / f"{digest}.zip"
        if path.is_file():
            return path
        found = next(self.seeder.home.rglob(f"{digest}*.zip"), None)
        if found is None:
            raise RuntimeError(f"no archive {digest}.zip under {self.seeder.home}")
        return found

    # transfers

    def clones(self, hosts: list[Host], ar: Archive, mark: Disruption | None = None) -> list[Timed]:
        """Clone ``ar`` on every host at once; ``mark`` acts on the first one half way."""
        timeout = 120 + 30 * len(hosts) * ar.size / (rate_bits(self.rate) / 8)
        jobs = []
        for host in hosts:
            self.counter += 1
            args: dict[str, Any] = {"source": f"{self.seeder.ip}/{ar.name}"}
            args["as"] = f"copy{self.counter}"
            args["poll"] = POLL
            args |= {"timeout": timeout, "mark": 0.5 if mark else None}
            jobs.append(Job(host, "clone", args))
        seeder = node_pid(self.seeder)
        pids = [node_pid(host) for host in hosts]
        cpu0 = [cpu_seconds(pid) for pid in [seeder, *pids]]
        sent = self.sent(self.seeder)
        together(jobs)
        event = mark(jobs[0]) if mark is not None else None
        out = []
        for job in jobs:
            res = job.result()
            doc = res["doc"]
            ok = doc["state"] in ("installed", "running")
            t = Timed(res["start"], res["end"], ar.size, ok, doc.get("error") or "", doc)
            t.seen, t.timeline = res.get("seen", {}), res.get("timeline", [])
            t.downloaded = res.get("downloaded")
            out.append(t)
            if not ok:
                log(f"clone on {job.host.ns} {doc['state']}: {doc.get('error')}")
                t.log_tail = job.host.log()[-4000:]  # the home is wiped by the next fresh()
        sent = self.sent(self.seeder) - sent
        out[0].event = event
        whole = span(out)
        for t, pid, before in zip(out, pids, cpu0[1:], strict=True):
            t.cpu = {"seeder": core_share(seeder, cpu0[0], whole)}
            t.cpu["client"] = core_share(pid, before, t.seconds)
            t.seeder_sent = sent
        return out

    def group(self, hosts: list[Host], ar: Archive) -> dict[str, Any]:
        """Clone ``ar`` on every host at once: total time, what the seeder sent, CPU."""
        cpu = CpuMeter()
        items = self.clones(hosts, ar)
        return {
            "total": span(items),
            "failed": sum(not t.ok for t in items),
            "seeder_sent": items[0].seeder_sent,
            "seeder_cpu": items[0].cpu["seeder"],
            "clients_cpu_s": sum((t.cpu["client"] or 0) * t.seconds for t in items),
            "cpu_busy": cpu.busy(),
            "clones": [t.raw() for t in items],
        }

    def sent(self, host: Host) -> int:
        """Bytes ``host`` has sent on its link (counted on the bridge side: its veth's rx)."""
        veth = f"ae{self.lan.tag}h{host.index}"
        out = subprocess.run(
            ["ip", "-s", "-j", "link", "show", "dev", veth], check=True, capture_output=True
        )
        return int(json.loads(out.stdout)[0]["stats64"]["rx"]["bytes"])

    def curls(self, hosts: list[Host], file: str) -> list[Timed]:
        """``curl -s -o FILE`` of nginx's ``file`` on every host at once."""
        jobs = []
        for host in hosts:
            self.counter += 1
            dest = str(host.home / f"curl-{self.counter}.bin")
            url = f"http://{self.seeder.ip}:{NGINX_PORT}/{file}"
            jobs.append(Job(host, "curl", {"url": url, "out": dest}))
        nginx = self.nginx.pid if self.nginx is not None else None
        before = cpu_seconds(nginx)
        together(jobs)
        results = [job.result() for job in jobs]
        out: list[Timed] = []
        for r in results:
            if r["rc"] != 0:
                log(f"curl failed ({r['rc']}): {r['error']}")
            out.append(Timed(r["start"], r["end"], r["bytes"], r["rc"] == 0, r["error"]))
        whole = span(out)
        for t, r in zip(out, results, strict=True):
            t.cpu = {"nginx": core_share(nginx, before, whole), "curl": r["cpu"] / t.seconds}
        return out


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- scenarios ----------------------------------------------------------------------


@dataclass(slots=True)
class Options:
    runs: int
    scale: float
    rate: str
    cut_size: int
    reference_runs: int

    @property
    def link(self) -> float:
        """The nominal link rate in bytes per second."""
        return rate_bits(self.rate) / 8


Measure = Callable[[], list[Timed]]


def ok_seconds(items: list[Timed]) -> list[float]:
    return [t.seconds for t in items if t.ok]


def in_turn(run: int, clone: Measure, curl: Measure) -> tuple[list[Timed], list[Timed]]:
    """Both measurements, the clone first on even runs (neither always gets a warm cache)."""
    if run % 2 == 0:
        first = clone()
        return first, curl()
    second = curl()
    return clone(), second


def link_check(fleet: Fleet, opts: Options, probe: int) -> dict[str, Any]:
    (client,) = fleet.fresh(1, {})
    fleet.curls([client], "probe.bin")  # warm-up
    runs = [fleet.curls([client], "probe.bin")[0] for _ in range(opts.runs)]
    rate = probe / statistics.median(t.seconds for t in runs)
    log(f"link: curl of {size_text(probe)} at {mbit(rate)}")
    return {"bytes": probe, "seconds": [t.seconds for t in runs], "rate": rate}


def solo_vs_curl(fleet: Fleet, opts: Options, ar: Archive) -> tuple[list[Timed], list[Timed]]:
    fleet.warm(ar)
    clone: list[Timed] = []
    curl: list[Timed] = []
    for run in range(opts.runs):
        client = fleet.fresh(1, {})
        measured = partial(clone_with_disk, fleet, client, ar, disk_used(client[0].home))
        a, b = in_turn(run, measured, partial(fleet.curls, client, f"{ar.name}.zip"))
        clone += a
        curl += b
        log(f"{ar.name} run {run + 1}: clone {a[0].seconds:.2f} s, curl {b[0].seconds:.2f} s")
    fleet.solo.setdefault(ar.name, []).extend(t for t in clone if t.ok)
    return clone, curl


def clone_with_disk(fleet: Fleet, client: list[Host], ar: Archive, before: int) -> list[Timed]:
    """One clone, with what the client's home grew by as it ended and once settled."""
    out = fleet.clones(client, ar)
    home = client[0].home
    out[0].disk_end = disk_used(home) - before
    settled, out[0].settle = settled_disk(home)
    out[0].disk = settled - before
    return out


def settled_disk(home: Path, timeout: float = 30.0) -> tuple[int, float]:
    """``disk_used(home)`` once it has stopped changing for a second (after a clone the
    node gives the kept archive's copy of large entries back, in the background), and
    the seconds that took."""
    t0 = time.monotonic()
    last, same = disk_used(home), 0
    while same < 4 and time.monotonic() - t0 < timeout:
        time.sleep(0.25)
        now = disk_used(home)
        same = same + 1 if now == last else 0
        last = now
    return last, time.monotonic() - t0


def disk_used(home: Path) -> int:
    """Bytes the files under a node's home take on disk (allocated blocks: a sparse or
    backed archive counts what it really takes), curl's downloads left out."""
    total = 0
    for path in home.rglob("*"):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not path.name.startswith("curl-"):
            total += st.st_blocks * 512
    return total


def solo_figures(fleet: Fleet, opts: Options, ar: Archive) -> dict[str, Any]:
    """One client at a time: clones and curls of ``ar``, their raw runs and medians."""
    cpu = CpuMeter()
    clone, curl = solo_vs_curl(fleet, opts, ar)
    c, b = median(ok_seconds(clone)), median(ok_seconds(curl))
    return {
        "archive": fleet.describe(ar),
        "clone": [t.raw() for t in clone],
        "curl": [t.raw() for t in curl],
        "clone_median": c,
        "curl_median": b,
        "disk_ratio": median([t.disk / ar.unpacked for t in clone if t.ok and t.disk is not None]),
        "curl_rate": ar.size / b if b else None,
        "all_ok": all(t.ok for t in clone),
        "cpu_busy": cpu.busy(),
    }


def incompressible(fleet: Fleet, opts: Options) -> dict[str, Any]:
    ar = fleet.archive("random", scaled(2 * GiB, opts.scale))
    r = solo_figures(fleet, opts, ar)
    c, b = r["clone_median"], r["curl_median"]
    ratio = c / b if c and b else None
    met = None if ratio is None else ratio <= 1.05 and r["all_ok"]
    disk = r["disk_ratio"]
    return {**r, "ratio": ratio, "met": met, "disk_met": None if disk is None else disk <= 1.10}


def files_floor(fleet: Fleet, target: str | None, runs: int) -> list[float]:
    """Seconds ``cp -r`` takes to make the last clone's files again beside it (read
    from the page cache, written to the same disk): what creating and writing that many
    files costs on this machine, without a network, an archive or inflating."""
    if not target:
        return []
    tree = fleet.clients[0].home / "workspaces" / target
    out = []
    for _ in range(runs):
        fleet.counter += 1
        dest = tree.with_name(f"floor-{fleet.counter}")
        t0 = time.monotonic()
        subprocess.run(["cp", "-r", str(tree), str(dest)], check=True)
        out.append(time.monotonic() - t0)
        fleet.discard(dest)
    log(f"{target}: cp -r of the unpacked tree in {runs_text(out)}")
    return out


def compressible(fleet: Fleet, opts: Options) -> dict[str, Any]:
    ar = fleet.archive("text", scaled(500 * MiB, opts.scale))
    r = solo_figures(fleet, opts, ar)
    c, curl_rate = r["clone_median"], r["curl_rate"]
    effective = ar.unpacked / c if c else None
    floor = files_floor(fleet, r["clone"][-1]["doc"].get("target"), opts.runs)
    return {
        **r,
        "files_floor": floor,
        "memory_rates": memory_rates(fleet, scaled(512 * MiB, opts.scale), opts.runs),
        "effective_rate": effective,
        "vs_link": effective / opts.link if effective else None,
        "vs_curl": effective / curl_rate if effective and curl_rate else None,
        "met": None if effective is None else effective >= 2 * opts.link,
    }


def concurrent(fleet: Fleet, opts: Options) -> dict[str, Any]:
    ar = fleet.archive("random", scaled(200 * MiB, opts.scale))
    fleet.warm(ar)
    runs: list[dict[str, Any]] = []
    for run in range(opts.runs):
        clients = fleet.fresh(10, SINGLE_SOURCE)
        pid = node_pid(fleet.seeder)
        idle = proc_status(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        watch = RssWatch(pid)
        watch.start()
        cpu = CpuMeter()
        clone, curl = in_turn(
            run, partial(fleet.clones, clients, ar), partial(fleet.curls, clients, f"{ar.name}.zip")
        )
        watch.stopped.set()
        watch.join()
        hwm = proc_status(pid, "VmHWM")
        runs.append(
            {
                "clone_aggregate": aggregate(clone),
                "curl_aggregate": aggregate(curl),
                "clone_failed": sum(not t.ok for t in clone),
                "clone_spread": [min(ok_seconds(clone) or [0]), max(ok_seconds(clone) or [0])],
                "rss_idle": idle,
                "rss_hwm": hwm,
                "rss_sampled_peak": watch.peak,
                "cpu_busy": cpu.busy(),
                "clone": [t.raw() for t in clone],
                "curl": [t.raw() for t in curl],
            }
        )
        log(
            f"concurrent run {run + 1}: clones {mbit(runs[-1]['clone_aggregate'])}, "
            f"curls {mbit(runs[-1]['curl_aggregate'])}, seeder VmHWM {hwm / MiB:.0f} MiB"
        )
    agg = statistics.median(r["clone_aggregate"] for r in runs)
    rss = max(r["rss_hwm"] for r in runs)
    return {
        "archive": fleet.describe(ar),
        "runs": runs,
        "clone_aggregate": agg,
        "curl_aggregate": statistics.median(r["curl_aggregate"] for r in runs),
        "rss_hwm_max": rss,
        "met_aggregate": agg >= 0.95 * opts.link and not any(r["clone_failed"] for r in runs),
        "met_rss": rss < 150e6,
    }


def swarm(fleet: Fleet, opts: Options) -> dict[str, Any]:
    ar = fleet.archive("random", scaled(1 * GiB, opts.scale))
    fleet.warm(ar)
    single: list[Timed] = []
    many: list[dict[str, Any]] = []
    for run in range(opts.runs):
        single.extend(fleet.clones(fleet.fresh(1, {}), ar))
        many.append(fleet.group(fleet.fresh(8, {}), ar))
        log(f"swarm run {run + 1}: one {single[-1].seconds:.2f} s, 8 {many[-1]['total']:.2f} s")
    fleet.solo.setdefault(ar.name, []).extend(t for t in single if t.ok)
    one: list[dict[str, Any]] = []
    for run in range(opts.reference_runs):  # a reference, not a bar: the slowest part
        one.append(fleet.group(fleet.fresh(8, SINGLE_SOURCE), ar))
        log(f"swarm run {run + 1}: 8 single-source {one[-1]['total']:.2f} s")
    s = median(ok_seconds(single))
    m = statistics.median(r["total"] for r in many)
    o = median([r["total"] for r in one])  # None with --reference-runs 0
    failed = sum(r["failed"] for r in many + one)
    return {
        "archive": fleet.describe(ar),
        "single": [t.raw() for t in single],
        "many": many,
        "one_source": one,
        "single_median": s,
        "many_median": m,
        "one_source_median": o,
        "many_ratio": m / s if s else None,
        "one_source_ratio": o / s if s and o else None,
        "failed": failed,
        "met": None if not s else m <= 3 * s and failed == 0,
    }


def cut(fleet: Fleet, opts: Options) -> dict[str, Any]:
    ar = fleet.archive("random", scaled(opts.cut_size, opts.scale))
    fleet.warm(ar)
    if not fleet.solo.get(ar.name):
        base = [fleet.clones(fleet.fresh(1, {}), ar)[0] for _ in range(opts.runs)]
        fleet.solo[ar.name] = [t for t in base if t.ok]

    def link_down(job: Job) -> dict[str, Any] | None:
        if (at := wait_mark(job)) is None:
            return None
        fleet.lan.set_link(fleet.seeder, False)
        time.sleep(OUTAGE)
        fleet.lan.set_link(fleet.seeder, True)
        if not fleet.shaped(fleet.seeder):
            log("the seeder's tc qdisc was lost with the link: shaping it again")
            fleet.shape(fleet.seeder)
        return at | {"up": time.time()}

    def restart(job: Job) -> dict[str, Any] | None:
        if (at := wait_mark(job)) is None:
            return None
        fleet.seeder.stop()
        stopped = time.time()
        fleet.start_seeder()
        return at | {"stopped": stopped, "up": time.time()}

    link: list[Timed] = []
    again: list[Timed] = []
    for run in range(opts.runs):
        link.extend(fleet.clones(fleet.fresh(1, {}), ar, mark=link_down))
        again.extend(fleet.clones(fleet.fresh(1, {}), ar, mark=restart))
        log(f"cut run {run + 1}: link {link[-1].seconds:.1f} s, restart {again[-1].seconds:.1f} s")
    return {
        "archive": fleet.describe(ar),
        "uninterrupted": [t.raw() for t in fleet.solo[ar.name]],
        "link": [t.raw() | redownload(t, ar) for t in link],
        "restart": [t.raw() | redownload(t, ar) for t in again],
    }


def wait_mark(job: Job) -> dict[str, Any] | None:
    """Wait until the clone is half way; None if it ended first (nothing to interrupt)."""
    kind, payload = job.read()
    if kind != "mark":
        job.stashed = payload
        log("the clone ended before half way: nothing interrupted")
        return None
    return {"at_bytes": payload["bytes_done"], "at": time.time()}  # "at" as the driver's clock


def redownload(t: Timed, ar: Archive) -> dict[str, Any]:
    received = t.doc.get("bytes_received")
    if received is None:
        return {"redownloaded": None}
    return {
        "redownloaded": received - ar.size,
        "redownloaded_pct": 100 * (received - ar.size) / ar.size,
    }


# -- report ---------------------------------------------------------------------------

Row = tuple[str, str, str, str, str]


def code_note(code: dict[str, Any]) -> str:
    dirty = " plus uncommitted changes" if code.get("dirty") else ""
    how = "a copy of `aienv/` taken at the start" if code["snapshot"] else "the working tree"
    return f"Nodes ran {how} (commit {code['commit']}{dirty})."


def report(results: dict[str, Any], opts: Options, hosts: int) -> Iterator[str]:
    link = results["link"]
    yield f"## Transfer ({datetime.date.today().isoformat()})"
    yield ""
    yield (
        f"`scripts/bench transfer --runs {opts.runs} --scale {opts.scale:g} --rate {opts.rate}`: "
        f"{hosts} hosts (a seeder and clients), each in a network namespace on one bridge, "
        f"every link shaped with `tc tbf rate {opts.rate} burst 512kb latency 20ms` in both "
        "directions (the host's `eth0` and its bridge-side veth). The baseline is "
        "`curl -s -o FILE` in the client's namespace fetching the same archive file from "
        f"nginx {nginx_version()} (`sendfile on`) in the seeder's namespace, in the same run. "
        "Clone time runs from `POST /api/v1/clones` to the live feed's change to `installed` "
        f"(download, verification and extraction). Medians of {opts.runs} runs "
        f"({opts.reference_runs} for the single-source swarm, a reference). "
        f"Machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GiB:.0f} GiB, "
        f"Linux {platform.release()}. {code_note(results['code'])}"
    )
    yield ""
    yield (
        f"Link check: curl of {size_text(link['bytes'])} from nginx runs at "
        f"**{mbit(link['rate'])}** ({link['rate'] / 1e6:.1f} MB/s, "
        f"{100 * link['rate'] / opts.link:.1f} % of the nominal {mbit(opts.link)})."
    )
    for name in SCENARIOS:
        if name in results:
            yield ""
            yield from SECTIONS[name](results[name], opts)
            yield from disturbed(results[name]["machine"])


def disturbed(machine: dict[str, float]) -> Iterator[str]:
    """A warning when processes this benchmark did not start, or the hypervisor, took CPU."""
    if machine["others"] > 0.03 or machine["steal"] > 0.03:
        yield ""
        yield (
            f"**Disturbed:** during this scenario other processes used "
            f"{100 * machine['others']:.0f} % and the hypervisor stole "
            f"{100 * machine['steal']:.0f} % of the machine's CPU."
        )


def table(rows: list[Row]) -> Iterator[str]:
    yield "| measurement | median | runs | bar | met |"
    yield "|---|---|---|---|---|"
    for row in rows:
        yield "| " + " | ".join(row) + " |"


def timed_row(label: str, items: list[dict[str, Any]], key: str = "seconds") -> Row:
    values = [x[key] for x in items if "error" not in x and x.get(key) is not None]
    failed = sum("error" in x for x in items)
    note = f" ({failed} failed)" if failed else ""
    return (label, secs(median(values)), runs_text(values) + note, "", "")


def first_note(ar: dict[str, Any]) -> str:
    return (
        f"The first clone after sharing took {secs(ar['first_clone'])} "
        "(a warm-up, not counted: it fills the seeder's caches)."
    )


def core(items: list[dict[str, Any]], who: str) -> str:
    """The median share of one core that ``who`` used during the items, as text."""
    values = [x["cpu"][who] for x in items if x["cpu"].get(who) is not None]
    return "n/a" if not values else f"{100 * statistics.median(values):.0f} %"


def cpu_note(r: dict[str, Any]) -> str:
    return (
        f"CPU, as a share of one core: during a clone the client node {core(r['clone'], 'client')}"
        f" and the seeder node {core(r['clone'], 'seeder')}; during a curl, curl "
        f"{core(r['curl'], 'curl')} and nginx {core(r['curl'], 'nginx')}. The machine was "
        f"{100 * r['cpu_busy']:.0f} % busy over the runs ({os.cpu_count()} cores)."
    )


def times(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}x"


def md_incompressible(r: dict[str, Any], opts: Options) -> Iterator[str]:
    ar = r["archive"]
    yield f"### Incompressible: {size_text(ar['unpacked'])} of random data ({ar['files']} files)"
    yield ""
    curl = timed_row("curl from nginx (baseline)", r["curl"])
    yield from table(
        [
            (curl[0], f"{curl[1]} ({mbit(r['curl_rate'] or 0)})", *curl[2:]),
            timed_row("aienv clone", r["clone"]),
            timed_row("  ... its `bytes_done` reached the size at", r["clone"], "downloaded"),
            ("clone / curl", times(r["ratio"], 3), "", "<= 1.05x", met(r["met"])),
            (
                "disk: the client's home grew by / unpacked size, settled",
                times(r["disk_ratio"], 3),
                disk_runs(r, "disk", ar["unpacked"]),
                "<= 1.10x",
                met(r["disk_met"]),
            ),
            (
                "  ... read as the clone ended (the copy given back in the background)",
                "",
                disk_runs(r, "disk_end", ar["unpacked"]),
                "",
                "",
            ),
            (
                "  ... seconds until settled",
                "",
                runs_text([x["settle"] for x in r["clone"] if x.get("settle") is not None]),
                "",
                "",
            ),
        ]
    )
    yield ""
    yield f"Archive {size_text(ar['size'])}. {cpu_note(r)} {first_note(ar)}"


def disk_runs(r: dict[str, Any], key: str, unpacked: int) -> str:
    return runs_text([x[key] / unpacked for x in r["clone"] if x.get(key) is not None])


def memory_rates(fleet: Fleet, size: int, runs: int) -> dict[str, list[float]]:
    """Bytes per second ``dd`` writes into a new file of ``size`` in a client's home:
    ``runs`` files into whatever memory the machine gives them ("fresh"; each kept
    until all are written, so none reuses another's pages), then, those deleted,
    ``runs`` more, each deleted before the next ("recycled": written into the memory
    just given back).

    In a virtual machine whose host takes back the guest's free memory (virtio-balloon
    free page reporting: this machine's), a page the guest has not used for a few
    seconds is faulted in again on the host when it is next written, and the first rate
    is several times the slower. A clone writes its files and its archive into such
    pages: this is the cost of the bytes alone, before any network or inflating."""
    home = fleet.clients[0].home

    def written(path: Path) -> float:
        count = f"count={size // MiB}"
        t0 = time.monotonic()
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={path}", "bs=1M", count, "status=none"], check=True
        )
        return size / (time.monotonic() - t0)

    fresh_files = [home / f"dd-fresh-{i}" for i in range(runs)]
    out = {"fresh": [written(path) for path in fresh_files], "recycled": []}
    for path in fresh_files:
        path.unlink()
    for _ in range(runs):
        out["recycled"].append(written(home / "dd-recycled"))
        (home / "dd-recycled").unlink()
    log("page cache written: " + "; ".join(f"{k} {mb_text(r)} MB/s" for k, r in out.items()))
    return out


def md_compressible(r: dict[str, Any], opts: Options) -> Iterator[str]:
    ar = r["archive"]
    eff = r["effective_rate"]
    yield (
        f"### Compressible: {size_text(ar['unpacked'])} of generated code, JSON and prose "
        f"({ar['files']} files; archive {size_text(ar['size'])}, "
        f"deflated {ar['unpacked'] / ar['size']:.2f}x)"
    )
    yield ""
    curl = timed_row("curl of the archive from nginx", r["curl"])
    rate = "n/a"
    if eff is not None:
        rate = f"{eff / 1e6:.0f} MB/s = {r['vs_link']:.2f}x link, {r['vs_curl']:.2f}x curl's rate"
    yield from table(
        [
            (curl[0], f"{curl[1]} ({mbit(r['curl_rate'] or 0)})", *curl[2:]),
            timed_row("aienv clone", r["clone"]),
            timed_row("  ... its `bytes_done` reached the size at", r["clone"], "downloaded"),
            ("effective rate: unpacked bytes / clone time", rate, "", "", ""),
            ("  ... vs link", times(r["vs_link"]), "", ">= 2x link", met(r["met"])),
            floor_row(r, ar),
            *memory_rows(r, ar),
        ]
    )
    yield ""
    yield f"{cpu_note(r)} {first_note(ar)}"


def memory_rows(r: dict[str, Any], ar: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The machine's rate of writing page cache, fresh and recycled, and what writing the
    clone's bytes (its files and its archive) costs at the fresh one."""
    rates = r.get("memory_rates") or {}
    if not rates.get("fresh"):
        return []
    fresh, recycled = (statistics.median(rates[k]) for k in ("fresh", "recycled"))
    written = ar["unpacked"] + ar["size"]
    return [
        (
            "`dd` into a new file, fresh memory / just-freed memory",
            f"{fresh / 1e6:.0f} / {recycled / 1e6:.0f} MB/s",
            f"{mb_text(rates['fresh'])} / {mb_text(rates['recycled'])}",
            "",
            "",
        ),
        (
            "  ... the clone's files and archive written at the fresh rate",
            f"{secs(written / fresh)} of CPU ({size_text(written)})",
            "",
            "",
            "",
        ),
    ]


def floor_row(r: dict[str, Any], ar: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """The file system's own floor for the files: ``cp -r`` of the unpacked tree."""
    floor = r.get("files_floor") or []
    if not floor:
        return ("`cp -r` of the unpacked tree on the client's disk", "n/a", "", "", "")
    m, c = statistics.median(floor), r["clone_median"]
    clone = f"; clone / cp {c / m:.2f}x" if c else ""
    return (
        "`cp -r` of the unpacked tree on the client's disk (the files' own floor)",
        f"{secs(m)} ({ar['unpacked'] / m / 1e6:.0f} MB/s{clone})",
        runs_text(floor),
        "",
        "",
    )


def md_concurrent(r: dict[str, Any], opts: Options) -> Iterator[str]:
    ar = r["archive"]
    yield (
        f"### Concurrent: 10 clients clone one {size_text(ar['size'])} archive at once "
        "(`AIENV_MAX_SOURCES=1`)"
    )
    yield ""
    runs = r["runs"]
    hwm = [x["rss_hwm"] / MiB for x in runs]
    share = 100 * r["clone_aggregate"] / opts.link
    failed = sum(x["clone_failed"] for x in runs)
    yield from table(
        [
            (
                "10 parallel curls from nginx: aggregate",
                mbit(r["curl_aggregate"]),
                ", ".join(mbit(x["curl_aggregate"]) for x in runs),
                "",
                "",
            ),
            (
                "10 clones: aggregate",
                f"{mbit(r['clone_aggregate'])} ({share:.1f} % of link)",
                ", ".join(mbit(x["clone_aggregate"]) for x in runs)
                + (f" ({failed} failed)" if failed else ""),
                ">= 95 % of link",
                met(r["met_aggregate"]),
            ),
            (
                "seeder node peak RSS (VmHWM)",
                f"{statistics.median(hwm):.1f} MiB",
                ", ".join(f"{v:.1f}" for v in hwm),
                "< 150 MB (143 MiB)",
                met(r["met_rss"]),
            ),
        ]
    )
    yield ""
    spread = ", ".join(f"{x['clone_spread'][0]:.1f}-{x['clone_spread'][1]:.1f} s" for x in runs)
    firsts = [c["first_byte"] for x in runs for c in x["clone"] if c.get("first_byte") is not None]
    waited = f"{min(firsts):.1f}-{max(firsts):.1f} s" if firsts else "n/a"
    idle = statistics.median(x["rss_idle"] for x in runs) / MiB
    busy = statistics.median(x["cpu_busy"] for x in runs)
    clones = [c for x in runs for c in x["clone"]]
    curls = [c for x in runs for c in x["curl"]]
    sent = [x["clone"][0].get("seeder_sent") or 0 for x in runs]
    yield (
        f"Each clone's own time, fastest-slowest per run: {spread}; its first byte was "
        f"reported {waited} after its POST. Seeder RSS before the "
        f"clones {idle:.1f} MiB (VmHWM reset through `clear_refs` just before). While "
        f"serving, the seeder node used {core(clones, 'seeder')} of a core and nginx "
        f"{core(curls, 'nginx')}; the seeder sent {statistics.median(sent) / ar['size']:.2f}x "
        f"the archive per run. Machine CPU busy {100 * busy:.0f} % (11 nodes and their "
        f"drivers on {os.cpu_count()} cores)."
    )


def md_swarm(r: dict[str, Any], opts: Options) -> Iterator[str]:
    ar = r["archive"]
    yield f"### Swarm: 8 clients clone one {size_text(ar['size'])} archive at once"
    yield ""
    yield from table(
        [
            timed_row("one clone alone", r["single"]),
            timed_row("8 clones, default settings (many sources): total", r["many"], "total"),
            ("  ... / one clone", times(r["many_ratio"]), "", "<= 3x", met(r["met"])),
            timed_row("8 clones, `AIENV_MAX_SOURCES=1`: total", r["one_source"], "total"),
            ("  ... / one clone", times(r["one_source_ratio"]), "", "(~8x expected)", ""),
        ]
    )
    yield ""
    size = ar["size"]
    for label, key in (("many sources", "many"), ("one source", "one_source")):
        if not r[key]:
            continue  # (--reference-runs 0)
        sent = statistics.median(x["seeder_sent"] for x in r[key]) / size
        busy = statistics.median(x["cpu_busy"] for x in r[key])
        cpu_s = statistics.median(x["clients_cpu_s"] for x in r[key])
        yield (
            f"- {label}: the seeder sent {sent:.2f}x the archive per run; the client nodes "
            f"used {cpu_s:.0f} CPU-seconds in all (at least {cpu_s / (os.cpu_count() or 1):.0f} s"
            f" of this machine's {os.cpu_count()} cores); machine CPU busy {100 * busy:.0f} %."
        )
    if r["failed"]:
        yield f"- {r['failed']} clones failed (see the JSON)."


def redownloaded(items: list[dict[str, Any]], size: int) -> Row:
    finished = all("error" not in x for x in items)
    values = [x["redownloaded"] for x in items]
    if any(v is None for v in values):
        return ("  ... downloaded twice", "", "n/a (no `bytes_received`)", "< 5 %", "n/a")
    text = ", ".join(f"{v / MiB:.1f} MiB ({100 * v / size:.1f} %)" for v in values)
    ok = finished and all(v < 0.05 * size for v in values)
    return ("  ... downloaded twice (`bytes_received` - size)", "", text, "< 5 %", met(ok))


def wire_row(items: list[dict[str, Any]], size: int) -> Row:
    values = [x["seeder_sent"] / size for x in items if x.get("seeder_sent") is not None]
    text = ", ".join(f"{v:.3f}" for v in values)
    return ("  ... seeder sent on its link / archive size", times(median(values)), text, "", "")


def md_cut(r: dict[str, Any], opts: Options) -> Iterator[str]:
    ar = r["archive"]
    yield f"### Interrupted: one {size_text(ar['size'])} clone, cut at half way"
    yield ""
    link = timed_row(f"seeder link down for {OUTAGE:g} s", r["link"])
    again = timed_row("seeder node restarted", r["restart"])
    size = ar["size"]
    yield from table(
        [
            timed_row("uninterrupted clone", r["uninterrupted"]),
            wire_row(r["uninterrupted"], size),
            (*link[:3], "finishes", met(all("error" not in x for x in r["link"]))),
            redownloaded(r["link"], size),
            wire_row(r["link"], size),
            (*again[:3], "finishes", met(all("error" not in x for x in r["restart"]))),
            redownloaded(r["restart"], size),
            wire_row(r["restart"], size),
        ]
    )
    events = [(x["event"], x) for x in r["restart"] if x.get("event")]
    stop = median([e["stopped"] - e["at"] for e, _ in events])
    start = median([e["up"] - e["stopped"] for e, _ in events])
    drained = sum(
        x.get("downloaded") is not None and x["start"] + x["downloaded"] <= e["stopped"]
        for e, x in events
    )
    yield ""
    yield (
        f"Restart: the seeder's graceful stop (SIGTERM) took {secs(stop)} and its start "
        f"{secs(start)} (medians), both inside the clone's time"
        + (
            f"; in {drained} of {len(events)} runs the download had finished before the "
            "node was down (the graceful stop let it drain), so nothing was interrupted. "
            if drained
            else ". "
        )
        + "The bytes the seeder sent "
        "on its link (IP packets, counted on the bridge side) check `bytes_received` "
        "independently of the engine: an uninterrupted clone shows the protocol overhead."
    )


SECTIONS: dict[str, Callable[[dict[str, Any], Options], Iterator[str]]] = {
    "incompressible": md_incompressible,
    "compressible": md_compressible,
    "concurrent": md_concurrent,
    "swarm": md_swarm,
    "cut": md_cut,
}
RUNNERS: dict[str, Callable[[Fleet, Options], dict[str, Any]]] = {
    "incompressible": incompressible,
    "compressible": compressible,
    "concurrent": concurrent,
    "swarm": swarm,
    "cut": cut,
}


def nginx_version() -> str:
    out = subprocess.run(
        ["/usr/sbin/nginx", "-v"], check=False, capture_output=True, text=True
    ).stderr
    return out.strip().rpartition("/")[2].split()[0] if "/" in out else ""


def git(*args: str) -> str:
    res = subprocess.run(["git", "-C", str(REPO), *args], check=False, capture_output=True)
    return res.stdout.decode().strip() if res.returncode == 0 else "unknown"


def snapshot(root: Path) -> dict[str, Any]:
    """Copy aienv/ and put it first on PYTHONPATH: every node of the run imports the same
    code, even while the working tree changes."""
    code = root / "code"
    shutil.copytree(REPO / "aienv", code / "aienv", ignore=shutil.ignore_patterns("__pycache__"))
    os.environ["PYTHONPATH"] = str(code)
    probe = root / "where.py"  # run as a script, like the aienv entry point: no cwd on sys.path
    probe.write_text("import aienv\nprint(aienv.__file__)\n")
    where = subprocess.run(
        [sys.executable, str(probe)], check=True, capture_output=True, text=True
    ).stdout.strip()
    if not where.startswith(str(code)):
        raise RuntimeError(f"the snapshot is not what nodes import (they import {where})")
    dirty = git("status", "--porcelain", "--", "aienv") not in ("", "unknown")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty, "snapshot": True}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    parser.add_argument("--rate", default="1gbit", help="tc rate of every link (default 1gbit)")
    parser.add_argument("--cut-size", type=int, default=2048, help="MiB for 'cut' (times --scale)")
    parser.add_argument(
        "--reference-runs",
        type=int,
        default=1,
        help="runs of the single-source swarm, a reference for no bar (default 1: ~100 s each)",
    )
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run nodes from the working tree instead of a copy of aienv/ taken at start",
    )
    args = parser.parse_args()
    try:
        rate_bits(args.rate)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.runs < 1 or args.scale <= 0:
        parser.error("--runs must be at least 1 and --scale positive")
    return args


def main() -> None:
    args = parse_args()
    chosen = [s for s in SCENARIOS if s in (args.scenario or SCENARIOS)]
    opts = Options(args.runs, args.scale, args.rate, args.cut_size * MiB, args.reference_runs)
    clients = max(CLIENTS_NEEDED[s] for s in chosen)
    root = Path(tempfile.mkdtemp(prefix="aienv-bench-transfer-"))
    results: dict[str, Any] = {}
    started = time.monotonic()
    fleet: Fleet | None = None
    try:
        if args.no_snapshot:
            results["code"] = {"commit": git("rev-parse", "--short", "HEAD"), "snapshot": False}
        else:
            results["code"] = snapshot(root)
        fleet = Fleet(root, clients, args.rate)
        probe = scaled(256 * MiB, args.scale)
        fleet.start_nginx(probe)
        fleet.start_seeder()
        results["link"] = link_check(fleet, opts, probe)
        for name in chosen:
            t0, cpu = time.monotonic(), CpuMeter()
            results[name] = RUNNERS[name](fleet, opts)
            results[name]["machine"] = cpu.report() | {"seconds": time.monotonic() - t0}
            log(f"{name} done in {time.monotonic() - t0:.0f} s; CPU {results[name]['machine']}")
    finally:
        if fleet is not None:
            fleet.close()
        shutil.rmtree(root, ignore_errors=True)
    log(f"total {time.monotonic() - started:.0f} s")
    print("\n".join(report(results, opts, clients + 1)))
    if args.json:
        settings = {"runs": args.runs, "scale": args.scale, "rate": args.rate, "scenarios": chosen}
        args.json.write_text(json.dumps({"settings": settings, **results}, indent=1, default=str))


if __name__ == "__main__":
    main()
