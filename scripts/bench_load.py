"""Load benchmark: one node under archive downloads and metadata requests (scripts/bench load).

One server host and client hosts, each in its own network namespace on one bridge.
Links are shaped with ``tc tbf`` (``--queue-ms`` 20, like bench_transfer) so that the
downloads fill a LAN link (``--link``, default 1 Gbit/s) rather than the machine's two
cores. This kernel has ``tbf`` and ``pfifo`` but no ``fq_codel``, the default qdisc of a
Linux NIC that keeps a small flow from waiting behind bulk ones; so by default
(``--shaping per-client``) each download host's link gets ``--link`` / hosts and the
server's link is left free: the downloads still total a LAN link, and the metadata
answers do not queue behind them. ``--shaping shared`` shapes every link to ``--link``
instead, as on a NIC without fair queueing. The server host runs, in turn:

- ``node``: ``aienv serve``, sharing a workspace whose archive is ``--archive-mib``
  (default 64) MiB of random bytes and a small one (``hello-web``), with
  ``--fake-peers`` (default 5) signed peers announcing to it over multicast so that
  ``/peers`` is not empty;
- ``aiohttp`` (baseline): a trivial aiohttp app answering the same paths with the bytes
  the node gave for them (captured just before) and the archive with ``FileResponse``
  (sendfile): the framework without aienv's own work;
- ``nginx`` (baseline): nginx (one worker, like the node's one event loop) serving the
  same captured bytes and archive as static files (``sendfile`` for the archive only:
  with ``sendfile`` and ``tcp_nopush``, small answers waited up to 100 ms for the cork):
  what this machine can do.

Each gets, for ``--duration`` seconds (default 60):

- ``--downloads`` (default 50) archive downloads always in flight: ``GET
  /api/v1/archives/{digest}`` (the path clones use), from ``--download-hosts`` (default
  10) hosts, each looping its share of downloads end to end over keep-alive
  connections. The node gives upload slots per peer *address* (``max_uploads``,
  ``AIENV_MAX_UPLOADS``, default 4; beyond it 503 + ``Retry-After``); here it runs with
  ``AIENV_MAX_UPLOADS`` = the number of download hosts (``--max-uploads`` to change), so
  every download is admitted and a 503 counts as an error. With ``--max-uploads`` below
  the number of hosts, 503s are the node doing what it was told: the downloader sleeps
  ``Retry-After`` and tries again, and they are counted apart from errors.
- ``--rate`` metadata requests per second (default 500), open loop: request *i* is due
  at ``start + i / rate`` whatever happened to the ones before, and its latency runs
  from that due time to the end of its body, so a stalled server cannot hide latency
  (no coordinated omission). The paths are drawn (seeded) from ``/api/v1/node``,
  ``/api/v1/workspaces``, ``/api/v1/peers``, ``/api/v1/workspaces/{name}`` and
  ``/api/v1/node/announcement``, sent over a pool of keep-alive connections opened
  before the start. The generator reports how late it sent (lateness) and its own CPU.

Load generators are separate processes, one per client host: the metadata one an aiohttp
client at nice -10 (so it keeps its schedule on a busy 2-core machine), the download ones
raw asyncio (``BufferedProtocol``: each body received into one reused buffer, woken per
128 KiB with ``SO_RCVLOWAT``: about 16 % of a core for a gigabit). The benchmark
samples the server's RSS (``VmRSS`` every 0.5 s, peak ``VmHWM`` reset through
``clear_refs`` at the start) and CPU, the generators' CPU, and the machine's CPU taken by
processes it did not start. Bars (node): zero errors, metadata p99 < 50 ms, RSS < 150 MB.

Nodes import a copy of ``aienv/`` taken at the start (``--no-snapshot`` to use the
tree). Prints a Markdown section for docs/benchmarks.md (progress on stderr); ``--json
PATH`` writes the raw numbers. ``--profile`` records the node with py-spy (when on PATH)
during its run and logs where its CPU went; a profiled run is not a figure to publish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_transfer import (  # noqa: E402
    CpuMeter,
    api,
    cpu_seconds,
    git,
    log,
    nginx_version,
    proc_status,
    rate_bits,
    snapshot,
    write_random,
)

from tests.lan import Host, Lan  # noqa: E402

MiB = 1024**2
PORT = 37778
PHASES = ("node", "aiohttp", "nginx")
WORKSPACE = "bench"
SAMPLE = 0.5  # seconds between RSS and CPU samples of the server
START_DELAY = 0.5  # seconds between "go" and the common start, so every worker has it
LOWAT = 128 * 1024  # bytes a download waits for before it reads
SETTLE = 3.0  # seconds the node rests after packing and hearing its peers, before the load
RSS_BAR = 150e6
P99_BAR = 0.050


def metadata_paths() -> list[str]:
    return [
        "/api/v1/node",
        "/api/v1/workspaces",
        "/api/v1/peers",
        f"/api/v1/workspaces/{WORKSPACE}",
        "/api/v1/node/announcement",
    ]


# -- workers: run in a client (or the server) host's namespace --------------------------


def emit(kind: str, **fields: Any) -> None:
    print(kind, json.dumps(fields), flush=True)


async def wait_go() -> float:
    """Block (off the loop) until the main process says go; the common start, as loop time."""
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start_wall = float(line.split()[1])
    return asyncio.get_running_loop().time() + (start_wall - time.time())


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def user_now() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return f"connection: {type(exc).__name__}"
    return f"client: {type(exc).__name__}"


def counting_trace(counter: Counter[str]) -> aiohttp.TraceConfig:
    """Counts connections made and reused by a session."""

    async def created(*_: Any) -> None:
        counter["created"] += 1

    async def reused(*_: Any) -> None:
        counter["reused"] += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(created)
    trace.on_connection_reuseconn.append(reused)
    return trace


async def meta_worker(a: dict[str, Any]) -> None:
    """The open-loop metadata schedule; latency from each request's due time.

    It runs at nice -10, so that on a small machine the schedule is kept even when the
    server and the downloads take every core (its lateness is reported all the same).
    """
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    paths: list[str] = a["paths"]
    n = int(a["duration"] * a["rate"])
    rng = random.Random(a["seed"])
    order = [rng.randrange(len(paths)) for _ in range(n)]
    lateness = [0.0] * n
    latency = [0.0] * n
    outcome: dict[int, str] = {}
    conns: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=a["connections"], keepalive_timeout=300)
    timeout = aiohttp.ClientTimeout(total=a["timeout"])
    async with aiohttp.ClientSession(
        a["url"], connector=connector, timeout=timeout, trace_configs=[counting_trace(conns)]
    ) as session:

        async def fetch(path: str) -> None:
            async with session.get(path) as resp:
                await resp.read()

        await asyncio.gather(*(fetch(paths[i % len(paths)]) for i in range(a["warm"])))
        emit("ready", connections=conns["created"])
        start = await wait_go()
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start - loop.time()))
        cpu0, wall0 = cpu_now(), time.monotonic()

        async def one(i: int, due: float) -> None:
            lateness[i] = loop.time() - due
            try:
                async with session.get(paths[order[i]]) as resp:
                    body = await resp.read()
                    if not 200 <= resp.status < 300:
                        outcome[i] = f"HTTP {resp.status}"
                    elif not body:
                        outcome[i] = "empty body"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                outcome[i] = error_kind(exc)
            latency[i] = loop.time() - due

        pending: set[asyncio.Task[None]] = set()
        for i in range(n):
            due = start + i / a["rate"]
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            task = loop.create_task(one(i, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        sent_by = loop.time() - start
        await asyncio.gather(*pending)
        cpu, wall = cpu_now() - cpu0, time.monotonic() - wall0
    emit(
        "result",
        paths=paths,
        order=order,
        lateness=[round(x, 6) for x in lateness],
        latency=[round(x, 6) for x in latency],
        outcome={str(k): v for k, v in outcome.items()},
        cpu=cpu,
        wall=wall,
        sent_by=sent_by,
        connections=dict(conns),
    )


class HttpError(Exception):
    """A download that went wrong; its text is the error's kind."""


class Download(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection that GETs a path again and again.

    The body is received straight into one reused buffer (``recv_into``) and only
    counted: receiving a gigabit costs this process little, unlike a general client.
    Responses must carry ``Content-Length`` (the node, aiohttp and nginx all send it).
    """

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self.buffer = memoryview(bytearray(256 * 1024))
        self.head = bytearray()
        self.left: int | None = None  # body bytes still to come; None while in the head
        self.status = 0
        self.headers: dict[str, str] = {}
        self.done: asyncio.Future[None] | None = None
        self.last = 0.0  # loop time of the last bytes received
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sock = transport.get_extra_info("socket")
        self.lowat = 1

    def wake_at(self, nbytes: int) -> None:
        """Be woken only when ``nbytes`` can be read (fewer, larger reads: less CPU)."""
        nbytes = max(1, min(nbytes, LOWAT))
        if nbytes != self.lowat:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
            self.lowat = nbytes

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.last = asyncio.get_running_loop().time()
        if self.left is not None:
            self.body(nbytes)
            return
        self.head += self.buffer[:nbytes]
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > 64 * 1024:
                self.fail(HttpError("protocol: head too long"))
            return
        lines = self.head[:end].decode("latin-1").split("\r\n")
        rest = len(self.head) - end - 4
        self.head = bytearray()
        try:
            self.status = int(lines[0].split()[1])
            self.headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            self.left = int(self.headers["content-length"])
        except (IndexError, ValueError, KeyError):
            self.fail(HttpError("protocol: bad head"))
            return
        self.body(rest)

    def body(self, nbytes: int) -> None:
        assert self.left is not None
        if nbytes > self.left:
            self.fail(HttpError("protocol: more than Content-Length"))
            return
        self.left -= nbytes
        if self.status == 200:
            self.stats["bytes"] += nbytes
        self.wake_at(self.left)
        if self.left == 0 and self.done is not None and not self.done.done():
            self.left = None
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or ConnectionResetError("the server closed the connection"))

    async def get(self, request: bytes, stall: float) -> None:
        """Send ``request`` and wait for the whole response; a stall of ``stall`` s fails."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.done, self.left, self.last = loop.create_future(), None, loop.time()
        self.transport.write(request)
        while True:
            await asyncio.wait([self.done], timeout=stall)
            if self.done.done():
                return self.done.result()
            if loop.time() - self.last >= stall:
                self.fail(TimeoutError())


async def download_worker(a: dict[str, Any]) -> None:
    """``concurrency`` downloads of the archive, each restarted as soon as it ends."""
    size: int = a["size"]
    stats: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    seconds: list[float] = []
    ticks: list[int] = []  # bytes received by each second of the run
    request = f"GET {a['path']} HTTP/1.1\r\nHost: {a['host']}:{PORT}\r\n\r\n".encode()
    emit("ready")
    start = await wait_go()
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start - loop.time()))
    cpu0, wall0, user0 = cpu_now(), time.monotonic(), user_now()

    async def connect() -> Download | None:
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Download(stats), a["host"], PORT), 10
            )
        except (OSError, TimeoutError) as exc:
            errors[error_kind(exc)] += 1
            await asyncio.sleep(0.1)
            return None
        return conn

    async def fetch(conn: Download) -> bool:
        """One download on ``conn``; whether the connection can be used again."""
        t0 = loop.time()
        try:
            await conn.get(request, a["stall"])
        except HttpError as exc:
            errors[str(exc)] += 1
            return False
        except (OSError, TimeoutError) as exc:
            errors[error_kind(exc)] += 1
            return False
        if conn.status == 200:
            stats["completed"] += 1
            seconds.append(loop.time() - t0)
            if conn.headers.get("content-length") != str(size):
                errors["wrong size"] += 1
            return conn.headers.get("connection", "").lower() != "close"
        if conn.status == 503:  # the upload limit: wait as told, then again
            stats["busy"] += 1
            await asyncio.sleep(float(conn.headers.get("retry-after", "1")))
            return True
        errors[f"HTTP {conn.status}"] += 1
        return False

    async def forever() -> None:
        conn: Download | None = None
        while True:
            if conn is None or conn.transport is None or conn.transport.is_closing():
                conn = await connect()
            elif not await fetch(conn):
                conn.fail(ConnectionResetError())  # a new connection for the next one
                conn = None
                await asyncio.sleep(0.1)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1.0)
            ticks.append(stats["bytes"])

    tasks = [loop.create_task(forever()) for _ in range(a["concurrency"])]
    tasks.append(loop.create_task(ticker()))
    await asyncio.sleep(max(0.0, start + a["duration"] - loop.time()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu, wall = cpu_now() - cpu0, time.monotonic() - wall0
    emit(
        "result",
        user=user_now() - user0,
        bytes=stats["bytes"],
        completed=stats["completed"],
        busy=stats["busy"],
        errors=dict(errors),
        seconds=[round(s, 3) for s in seconds],
        ticks=ticks,
        cpu=cpu,
        wall=wall,
    )


def announce_worker(a: dict[str, Any]) -> None:
    """``peers`` signed fake peers, each announcing on multicast every interval / 2."""
    import hashlib
    import secrets

    from aienv.discovery import codec
    from aienv.identity import Identity

    peers = [(Identity.generate(), secrets.token_hex(8)) for _ in range(a["peers"])]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(a["ip"]))
    seq = 0
    while True:
        seq += 1
        for i, (ident, instance) in enumerate(peers):
            workspaces = [
                codec.SharedWorkspace(
                    name=f"peer{i}-ws{j}",
                    version="1.0.0",
                    digest=hashlib.sha256(f"{i}/{j}".encode()).hexdigest(),
                    size=(j + 1) * 10 * MiB,
                    runtimes=["process"],
                    tags=["bench", "load"],
                    languages=["python"],
                    tools=["http"],
                )
                for j in range(3)
            ]
            body = codec.Body(
                name=f"peer{i}",
                instance=instance,
                seq=seq,
                http=codec.HttpInfo(port=PORT),
                interval=a["interval"],
                resources={"cpus": 8, "memory": 32 << 30},
                workspaces=workspaces,
            )
            sock.sendto(codec.encode(body, ident), (a["group"], a["port"]))
        if seq == 1:
            emit("ready")
        readable, _, _ = select.select([sys.stdin], [], [], a["interval"] / 2)
        if readable and not sys.stdin.readline():
            return  # the main process closed our stdin: stop


def trivial_worker(a: dict[str, Any]) -> None:
    """The baseline app: the captured bytes for each metadata path, the archive by sendfile."""
    app = web.Application()

    def constant(body: bytes, content_type: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=content_type)

        return handler

    for path, spec in a["bodies"].items():
        app.router.add_get(path, constant(Path(spec["file"]).read_bytes(), spec["type"]))

    async def archive(request: web.Request) -> web.FileResponse:
        return web.FileResponse(a["archive"])

    app.router.add_get(a["archive_path"], archive)
    web.run_app(app, host=a["host"], port=PORT, access_log=None, print=None)


def worker(mode: str, args: dict[str, Any]) -> None:
    if mode == "meta":
        asyncio.run(meta_worker(args))
    elif mode == "download":
        asyncio.run(download_worker(args))
    elif mode == "announce":
        announce_worker(args)
    elif mode == "trivial":
        trivial_worker(args)
    else:
        raise SystemExit(f"unknown worker {mode}")


class Worker:
    """One worker process in a host's namespace; line protocol ``KIND JSON``."""

    def __init__(self, host: Host, mode: str, args: dict[str, Any]) -> None:
        self.host = host
        self.mode = mode
        self.proc = subprocess.Popen(
            host.nsenter(sys.executable, str(Path(__file__)), "--worker", mode, json.dumps(args)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, kind: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(
                f"{self.mode} worker in {self.host.ns} exited {self.proc.returncode}"
            )
        got, _, payload = line.partition(" ")
        if got != kind:
            raise RuntimeError(f"{self.mode} worker: expected {kind}, got {line[:200]}")
        out: dict[str, Any] = json.loads(payload)
        return out

    def go(self, start: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {start!r}\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        out = self.expect("result")
        self.proc.wait()
        return out

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the testbed ----------------------------------------------------------------------


@dataclass(slots=True)
class Options:
    duration: float
    rate: float
    downloads: int
    download_hosts: int
    archive_mib: int
    link: str | None  # a tc rate, or None: unshaped
    queue_ms: float  # tbf latency: how long a packet may wait in a link's queue
    shaping: str  # "per-client" or "shared", see Testbed.shape_all
    max_uploads: int
    timeout: float
    stall: float
    connections: int
    fake_peers: int
    seed: int
    phases: list[str]
    profile: bool

    @property
    def busy_expected(self) -> bool:
        """503s are the configured limit at work, not errors."""
        return self.max_uploads < self.download_hosts


@dataclass(slots=True)
class Sampler:
    """Samples a process's RSS and CPU every SAMPLE seconds in a thread."""

    pid: int
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (t, rss, cpu s)
    stopped: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self.stopped.wait(SAMPLE):
            try:
                rss = proc_status(self.pid, "VmRSS")
            except OSError:
                return
            self.samples.append((time.monotonic() - t0, rss, cpu_seconds(self.pid) or 0.0))

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()


class Testbed:
    """The LAN: a server host, a metadata client host and the download hosts."""

    def __init__(self, root: Path, opts: Options) -> None:
        self.root = root
        self.opts = opts
        self.lan = Lan(root / "hosts", 2 + opts.download_hosts)
        self.server, self.meta, *self.downloaders = self.lan.hosts
        self.nginx_prefix = root / "nginx"
        self.bodies: dict[str, dict[str, Any]] = {}
        self.archive: dict[str, Any] = {}
        self.announcer: Worker | None = None
        self.baseline: subprocess.Popen[bytes] | Worker | None = None
        if opts.link is not None:
            self.shape_all(opts.link)

    def shape_all(self, link: str) -> None:
        """``shared``: every link at ``link``. ``per-client``: each download host's link at
        ``link`` / hosts (together they fill ``link``), the server's and the metadata
        host's unshaped, so the metadata answers do not queue behind the downloads."""
        if self.opts.shaping == "shared":
            for host in self.lan.hosts:
                self.shape(host, link)
            return
        share = f"{int(rate_bits(link) / len(self.downloaders) / 1000)}kbit"
        for host in self.downloaders:
            self.shape(host, share)

    def shape(self, host: Host, rate: str) -> None:
        """tbf at ``rate`` on both ends of the host's link, as bench_transfer shapes them."""
        tbf = [
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "512kb",
            "latency",
            f"{self.opts.queue_ms:g}ms",
        ]
        veth = f"ae{self.lan.tag}h{host.index}"
        for cmd in (
            ["tc", "qdisc", "replace", "dev", veth],
            host.nsenter("tc", "qdisc", "replace", "dev", "eth0"),
        ):
            res = subprocess.run([*cmd, *tbf], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"tc in {host.ns}: {res.stderr}")

    # the node

    def start_node(self) -> int:
        self.server.extra_env = {"AIENV_MAX_UPLOADS": str(self.opts.max_uploads)}
        self.server.start("loaded", interval=10.0)
        assert self.server.proc is not None
        return node_pid(self.server.proc.pid)

    def prepare_node(self) -> None:
        """The shared workspaces, the fake peers, and the node's answers for the baselines."""
        src = self.root / "src"
        t0 = time.monotonic()
        write_random(src, self.opts.archive_mib * MiB)
        api(self.server, "POST", "/workspaces", {"name": WORKSPACE, "from": str(src)})
        shutil.rmtree(src)
        ws = api(self.server, "POST", f"/workspaces/{WORKSPACE}/share")
        hello = str(REPO / "workspaces" / "hello-web")
        api(self.server, "POST", "/workspaces", {"name": "hello", "from": hello})
        api(self.server, "POST", "/workspaces/hello/share")
        digest = ws["archive"]["digest"]
        path = self.server.home / "archives" / f"{digest}.zip"
        if not path.is_file():
            raise RuntimeError(f"no archive {path}")
        self.archive = {"digest": digest, "size": ws["archive"]["size"], "file": str(path)}
        size = ws["archive"]["size"]
        log(f"workspace {WORKSPACE}: archive {size / MiB:.1f} MiB in {time.monotonic() - t0:.1f} s")
        if self.opts.fake_peers:
            self.announcer = Worker(
                self.meta,
                "announce",
                {"peers": self.opts.fake_peers, "ip": self.meta.ip, "interval": 10.0}
                | {"group": "239.255.77.77", "port": 37777},
            )
            self.announcer.expect("ready")
            deadline = time.monotonic() + 10
            while len(self.server.api("/peers").json()["peers"]) < self.opts.fake_peers:
                if time.monotonic() > deadline:
                    raise RuntimeError("the node did not list the fake peers")
                time.sleep(0.1)
        self.capture()

    def capture(self) -> None:
        """What the node answers a peer on each metadata path, as files for the baselines."""
        folder = self.root / "bodies"
        folder.mkdir()
        for i, path in enumerate(metadata_paths()):
            resp = httpx.get(f"{self.server.url}{path}", timeout=10)  # from the bridge: a peer
            resp.raise_for_status()
            file = folder / f"{i}.body"
            file.write_bytes(resp.content)
            ctype = resp.headers["Content-Type"].split(";")[0]
            self.bodies[path] = {"file": str(file), "type": ctype, "bytes": len(resp.content)}

    def stop_server(self) -> None:
        if self.announcer is not None:
            self.announcer.close()
            self.announcer = None
        self.server.stop()
        if isinstance(self.baseline, Worker):
            self.baseline.proc.send_signal(signal.SIGINT)
            self.baseline.close()
        elif self.baseline is not None:
            self.baseline.send_signal(signal.SIGQUIT)
            try:
                self.baseline.wait(10)
            except subprocess.TimeoutExpired:
                self.baseline.kill()
                self.baseline.wait()
        self.baseline = None

    # baselines

    def start_trivial(self) -> int:
        args = {
            "bodies": self.bodies,
            "archive": self.archive["file"],
            "archive_path": self.archive_path,
            "host": self.server.ip,
        }
        self.baseline = Worker(self.server, "trivial", args)
        self.wait_port()
        return node_pid(self.baseline.proc.pid)

    def start_nginx(self) -> int:
        prefix = self.nginx_prefix
        for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / temp).mkdir(parents=True, exist_ok=True)
        locations = "".join(
            f"    location = {path} {{ default_type {spec['type']}; alias {spec['file']}; "
            "sendfile off; tcp_nopush off; }\n"
            for path, spec in self.bodies.items()
        )
        locations += (
            f"    location = {self.archive_path} {{ default_type application/zip; "
            f"alias {self.archive['file']}; }}\n"
        )
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"error_log {prefix}/error.log warn;\npid {prefix}/nginx.pid;\n"
            "events { worker_connections 1024; }\n"
            "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n"
            "  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n"
            + "".join(f"  {t}_temp_path {prefix}/{t};\n" for t in ("proxy", "fastcgi", "uwsgi"))
            + f"  scgi_temp_path {prefix}/scgi;\n  client_body_temp_path {prefix}/body;\n"
            f"  server {{\n    listen {self.server.ip}:{PORT};\n{locations}  }}\n}}\n"
        )
        self.baseline = subprocess.Popen(
            self.server.nsenter("/usr/sbin/nginx", "-p", str(prefix), "-c", str(conf)),
            stderr=(prefix / "stderr.log").open("wb"),
        )
        self.wait_port()
        return node_pid(self.baseline.pid)

    def wait_port(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((self.server.ip, PORT)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the baseline server did not come up")

    @property
    def archive_path(self) -> str:
        return f"/api/v1/archives/{self.archive['digest']}"

    # the load

    def load(self, server_pid: int, seed: int, profile: bool = False) -> dict[str, Any]:
        opts = self.opts
        base = f"http://{self.server.ip}:{PORT}"
        meta = Worker(
            self.meta,
            "meta",
            {
                "url": base,
                "paths": metadata_paths(),
                "rate": opts.rate,
                "duration": opts.duration,
                "timeout": opts.timeout,
                "seed": seed,
                "connections": opts.connections,
                "warm": 16,
            },
        )
        shares = [opts.downloads // opts.download_hosts] * opts.download_hosts
        for i in range(opts.downloads % opts.download_hosts):
            shares[i] += 1
        loaders = [
            Worker(
                host,
                "download",
                {
                    "host": self.server.ip,
                    "path": self.archive_path,
                    "size": self.archive["size"],
                    "concurrency": share,
                    "duration": opts.duration,
                    "stall": opts.stall,
                },
            )
            for host, share in zip(self.downloaders, shares, strict=True)
            if share
        ]
        workers = [meta, *loaders]
        try:
            for w in workers:
                w.expect("ready")
            rss_before = proc_status(server_pid, "VmRSS")
            hwm_lifetime = proc_status(server_pid, "VmHWM")
            Path(f"/proc/{server_pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now
            start = time.time() + START_DELAY
            for w in workers:
                w.go(start)
            marks = [self.log_size()]  # the node's log at the start and the end of the load
            end = threading.Timer(
                start + opts.duration - time.time() - 0.05, self.mark_log, [marks]
            )
            end.start()
            time.sleep(max(0.0, start - time.time()))
            sampler = Sampler(server_pid)
            sampler.start()
            cpu0, t0, meter = cpu_seconds(server_pid), time.monotonic(), CpuMeter()
            spy = self.profile(server_pid) if profile else None
            meta_result = meta.result()
            load_results = [w.result() for w in loaders]
            elapsed = time.monotonic() - t0
            cpu1 = cpu_seconds(server_pid)
            machine = meter.report()
            sampler.stop()
            hwm = proc_status(server_pid, "VmHWM")
            end.join()
        finally:
            for w in workers:
                w.close()
        where = finish_profile(spy) if spy is not None else None
        return {
            "meta": meta_result,
            "downloads": load_results,
            "server": {
                "cpu": None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / elapsed,
                "rss_before": rss_before,
                "hwm_lifetime_before": hwm_lifetime,
                "hwm": hwm,
                "samples": [[round(t, 2), rss, round(c, 3)] for t, rss, c in sampler.samples],
            },
            "machine": machine,
            "elapsed": elapsed,
            "profile": where,
            "log_marks": marks,
        }

    def log_size(self) -> int:
        path = self.server.log_path
        return path.stat().st_size if path is not None and path.exists() else 0

    def mark_log(self, marks: list[int]) -> None:
        marks.append(self.log_size())

    def profile(self, pid: int) -> tuple[subprocess.Popen[bytes], Path] | None:
        spy = shutil.which("py-spy")
        if spy is None:
            log("--profile: py-spy is not on PATH; not profiling")
            return None
        out = self.root / "profile.txt"
        cmd = [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
        cmd += ["--duration", str(math.ceil(self.opts.duration)), "--output", str(out)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_server()
        self.lan.close()


def node_pid(pid: int) -> int:
    """The server's own pid (nsenter execs it in place, or forks it)."""
    proc = psutil.Process(pid)
    if proc.name() == "nsenter":
        proc = proc.children()[0]
    return proc.pid


def finish_profile(spy: tuple[subprocess.Popen[bytes], Path]) -> dict[str, Any]:
    """Where the node's samples were: the top frames by own and by inclusive samples."""
    proc, out = spy
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines() if out.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    aienv = Counter({f: n for f, n in inclusive.items() if "aienv/" in f})
    tops = {"own": own.most_common(25), "aienv": aienv.most_common(40)}
    for title, rows in (("own", tops["own"][:15]), ("aienv inclusive", tops["aienv"][:25])):
        log(f"profile, {title} (of {total} samples):")
        for frame, n in rows:
            log(f"  {100 * n / max(total, 1):5.1f} %  {frame}")
    return {"total": total, **tops}


# -- figures ----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def figures(raw: dict[str, Any], opts: Options) -> dict[str, Any]:
    meta = raw["meta"]
    lat, late = meta["latency"], meta["lateness"]
    errors: Counter[str] = Counter(meta["outcome"].values())
    by_path: dict[str, list[float]] = {}
    for i, p in enumerate(meta["order"]):
        by_path.setdefault(meta["paths"][p], []).append(lat[i])
    downloads = raw["downloads"]
    dl_errors: Counter[str] = Counter()
    for d in downloads:
        dl_errors.update(d["errors"])
    busy = sum(d["busy"] for d in downloads)
    if busy and not opts.busy_expected:
        dl_errors["HTTP 503 (busy)"] += busy
    dl_bytes = sum(d["bytes"] for d in downloads)
    dl_seconds = [s for d in downloads for s in d["seconds"]]
    rss = [s[1] for s in raw["server"]["samples"]]
    gen_cpu = [meta["cpu"] / meta["wall"]] + [d["cpu"] / d["wall"] for d in downloads]
    return {
        "requests": len(lat),
        "rate": len(lat) / meta["sent_by"] if meta["sent_by"] else None,
        "errors": dict(errors),
        "latency": {q: pct(lat, v) for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
        | {"max": max(lat, default=None)},
        "by_path": {
            p: {"n": len(v), "p50": pct(v, 0.5), "p99": pct(v, 0.99), "max": max(v)}
            for p, v in by_path.items()
        },
        "lateness": {"p50": pct(late, 0.5), "p99": pct(late, 0.99), "max": max(late, default=0)},
        "connections": meta["connections"],
        "downloads_completed": sum(d["completed"] for d in downloads),
        "download_errors": dict(dl_errors),
        "busy": busy,
        "download_bytes": dl_bytes,
        "throughput": dl_bytes / opts.duration,
        "download_seconds": {"p50": pct(dl_seconds, 0.5), "max": max(dl_seconds, default=None)},
        "server_cpu": raw["server"]["cpu"],
        "rss_median": statistics.median(rss) if rss else None,
        "rss_max": max(rss, default=None),
        "rss_hwm": raw["server"]["hwm"],
        "rss_before": raw["server"]["rss_before"],
        "gen_meta_cpu": gen_cpu[0],
        "gen_download_cpu": sum(gen_cpu[1:]),
        "gen_download_cpu_max": max(gen_cpu[1:], default=0.0),
        "machine": raw["machine"],
    }


# -- report -----------------------------------------------------------------------------

TITLES = {
    "node": "aienv node",
    "aiohttp": "trivial aiohttp app (baseline)",
    "nginx": "nginx, static files (baseline)",
}


def ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.1f} ms"


def mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v / MiB:.1f} MiB"


def pct_text(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def kinds(errors: dict[str, int]) -> str:
    if not errors:
        return "0"
    total = sum(errors.values())
    return f"**{total}** (" + ", ".join(f"{k}: {n}" for k, n in sorted(errors.items())) + ")"


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def bars(f: dict[str, Any]) -> dict[str, bool]:
    p99 = f["latency"]["p99"]
    return {
        "errors": not f["errors"] and not f["download_errors"],
        "p99": p99 is not None and p99 < P99_BAR,
        "rss": f["rss_hwm"] < RSS_BAR,
    }


Cell = Callable[[dict[str, Any]], str]


def rows(opts: Options) -> list[tuple[str, Cell, str, str]]:
    """The comparison table: (label, cell of one phase's figures, bar, key of the bar)."""

    def throughput(f: dict[str, Any]) -> str:
        share = f" ({100 * f['throughput'] * 8 / rate_bits(opts.link):.0f} %)" if opts.link else ""
        return f"{f['throughput'] * 8 / 1e6:.0f} Mbit/s{share}"

    def latency(q: str) -> Cell:
        return lambda f: ms(f["latency"][q])

    out: list[tuple[str, Cell, str, str]] = [
        ("metadata requests (rate sent)", lambda f: f"{f['requests']} ({f['rate']:.0f}/s)", "", ""),
        ("metadata errors", lambda f: kinds(f["errors"]), "0", "errors"),
        ("metadata latency p50", latency("p50"), "", ""),
        ("metadata latency p90", latency("p90"), "", ""),
        ("metadata latency p99", latency("p99"), "< 50 ms", "p99"),
        ("metadata latency max", latency("max"), "", ""),
        ("downloads completed", lambda f: str(f["downloads_completed"]), "", ""),
        ("download errors", lambda f: kinds(f["download_errors"]), "0", "errors"),
    ]
    if opts.busy_expected:
        out.append(("downloads refused 503 (busy)", lambda f: str(f["busy"]), "", ""))
    out += [
        ("download throughput, aggregate", throughput, "", ""),
        ("one download, median time", lambda f: secs(f["download_seconds"]["p50"]), "", ""),
        ("server CPU (one core = 100 %)", lambda f: pct_text(f["server_cpu"]), "", ""),
        (
            "server RSS, median / max sample",
            lambda f: f"{mib(f['rss_median'])} / {mib(f['rss_max'])}",
            "",
            "",
        ),
        ("server peak RSS (VmHWM)", lambda f: mib(f["rss_hwm"]), "< 150 MB (143 MiB)", "rss"),
        (
            "generator CPU: metadata / downloads (sum)",
            lambda f: f"{pct_text(f['gen_meta_cpu'])} / {pct_text(f['gen_download_cpu'])}",
            "",
            "",
        ),
        (
            "generator lateness p50 / p99 / max",
            lambda f: " / ".join(ms(f["lateness"][q]) for q in ("p50", "p99", "max")),
            "",
            "",
        ),
        (
            "machine busy / others' share",
            lambda f: f"{pct_text(f['machine']['busy'])} / {pct_text(f['machine']['others'])}",
            "",
            "",
        ),
    ]
    return out


def shaping_note(opts: Options) -> str:
    if opts.link is None:
        return " (no link shaped)"
    tbf = f"`tc tbf burst 512kb latency {opts.queue_ms:g}ms`"
    if opts.shaping == "shared":
        return (
            f"; every link shaped with {tbf} at {opts.link} in both directions (this kernel "
            "has no `fq_codel`, so the metadata answers queue behind the downloads in the "
            "server's link)"
        )
    share = rate_bits(opts.link) / opts.download_hosts / 1e6
    return (
        f"; each download host's link shaped with {tbf} at {share:g} Mbit/s in both "
        f"directions, {opts.link} in all, and the server's and the metadata host's links "
        "left free: the downloads fill a LAN link's worth while the metadata answers do not "
        "wait behind them, as with the `fq_codel` of a real NIC (this kernel has none)"
    )


def report(results: dict[str, Any], opts: Options) -> Iterator[str]:
    figs = {
        name: results["phases"][name]["figures"] for name in PHASES if name in results["phases"]
    }
    cols = list(figs)
    link = opts.link or "none"
    yield f"## Load ({datetime.date.today().isoformat()})"
    yield ""
    yield (
        f"`scripts/bench load --duration {opts.duration:g} --rate {opts.rate:g} "
        f"--downloads {opts.downloads} --download-hosts {opts.download_hosts} "
        f"--archive-mib {opts.archive_mib} --link {link} --shaping {opts.shaping}`: "
        "one server host and "
        f"{1 + opts.download_hosts} client hosts, each in a network namespace on one bridge"
        + shaping_note(opts)
        + f". For {opts.duration:g} s: {opts.downloads} downloads of a "
        f"{results['archive']['size'] / MiB:.0f} MiB archive always in flight (`GET "
        f"/api/v1/archives/{{digest}}`, {opts.download_hosts} hosts looping over keep-alive "
        f"connections) and {opts.rate:g} metadata requests per second, open loop (latency "
        "from each request's due time), drawn evenly from `/api/v1/node`, `/workspaces`, "
        "`/peers`, `/workspaces/{name}` and `/node/announcement`. The node runs with "
        f"`AIENV_MAX_UPLOADS={opts.max_uploads}` (slots are per peer address)"
        + (
            "; 503s are counted apart from errors."
            if opts.busy_expected
            else ", so every download is admitted and a 503 would be an error."
        )
        + f" It shares two workspaces and hears {opts.fake_peers} fake peers. Baselines, "
        "same load, same server namespace: a trivial aiohttp app and nginx "
        f"{nginx_version()} (one worker; `sendfile` for the archive only, small answers "
        "written as the node writes them), both answering every path with the bytes the "
        "node gave for it. Machine: "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.0f} GiB, Linux "
        f"{platform.release()}, Python {platform.python_version()}. {code_note(results['code'])}"
    )
    yield ""
    yield "| measurement | " + " | ".join(TITLES[c] for c in cols) + " | bar | met |"
    yield "|---|" + "---|" * len(cols) + "---|---|"
    node = figs.get("node")
    ok = bars(node) if node else {}
    for label, cell, bar, key in rows(opts):
        verdict = met(ok[key]) if key and node else ""
        yield f"| {label} | " + " | ".join(cell(figs[c]) for c in cols) + f" | {bar} | {verdict} |"
    if node:
        yield ""
        yield "The node's metadata latency by path:"
        yield ""
        yield "| path | bytes | requests | p50 | p99 | max |"
        yield "|---|---|---|---|---|---|"
        sizes = results.get("bodies", {})
        for path, v in node["by_path"].items():
            size = sizes.get(path, {}).get("bytes", "")
            yield (
                f"| `{path}` | {size} | {v['n']} | {ms(v['p50'])} | {ms(v['p99'])} | "
                f"{ms(v['max'])} |"
            )
        phase = results["phases"]["node"]
        opened = node["connections"].get("created", 0)
        reused = node["connections"].get("reused", 0)
        yield ""
        yield (
            f"Node RSS before the load {mib(node['rss_before'])} (its peak since start "
            f"{mib(phase['raw']['server']['hwm_lifetime_before'])}). The metadata generator "
            f"opened {opened} connections ({opts.connections} is its cap: beyond it requests "
            f"wait for one, and that wait is in their latency) and reused them {reused} times. "
            f"Node log: {len(phase['log_errors']['during'])} ERROR records during the load, "
            f"{len(phase['log_errors']['after'])} after it (when the benchmark cut the "
            "downloads in flight)."
        )
    for c in cols:
        f = figs[c]
        if f["machine"]["others"] > 0.03 or f["machine"]["steal"] > 0.03:
            yield ""
            yield (
                f"**Disturbed ({TITLES[c]}):** processes this benchmark did not start used "
                f"{pct_text(f['machine']['others'])} and the hypervisor stole "
                f"{pct_text(f['machine']['steal'])} of the machine's CPU."
            )
        behind = f["lateness"]["p99"] or 0
        if behind > 0.005 or f["gen_meta_cpu"] > 0.7:
            yield ""
            yield (
                f"**Generator behind ({TITLES[c]}):** its p99 lateness was {ms(behind)} and it "
                f"used {pct_text(f['gen_meta_cpu'])} of a core; latencies include that."
            )


def secs(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} s"


def code_note(code: dict[str, Any]) -> str:
    dirty = " plus uncommitted changes" if code.get("dirty") else ""
    how = "a copy of `aienv/` taken at the start" if code["snapshot"] else "the working tree"
    return f"The node ran {how} (commit {code['commit']}{dirty})."


# -- main -------------------------------------------------------------------------------


def parse_args() -> tuple[Options, Path | None, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--rate", type=float, default=500.0, help="metadata requests/s (500)")
    parser.add_argument("--downloads", type=int, default=50, help="downloads in flight (50)")
    parser.add_argument("--download-hosts", type=int, default=10, help="hosts they come from")
    parser.add_argument("--archive-mib", type=int, default=64, help="archive size (64 MiB)")
    parser.add_argument(
        "--link", default="1gbit", help="tc rate of every link (1gbit), or 'none' for unshaped"
    )
    parser.add_argument(
        "--queue-ms", type=float, default=20.0, help="tbf latency of every link (20 ms)"
    )
    parser.add_argument(
        "--shaping",
        choices=("per-client", "shared"),
        default="per-client",
        help="per-client: each download host gets link/hosts, the server's link is free "
        "(the default); shared: every link at --link, answers queue behind downloads",
    )
    parser.add_argument(
        "--max-uploads", type=int, help="AIENV_MAX_UPLOADS of the node (default: download hosts)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="metadata timeout (5 s)")
    parser.add_argument("--stall", type=float, default=30.0, help="download read timeout (30 s)")
    parser.add_argument("--connections", type=int, default=256, help="metadata connection cap")
    parser.add_argument("--fake-peers", type=int, default=5, help="peers announcing to the node")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--phase", action="append", choices=PHASES, help="repeatable; all")
    parser.add_argument("--profile", action="store_true", help="py-spy the node (not for docs)")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    parser.add_argument("--no-snapshot", action="store_true", help="run the working tree's aienv")
    args = parser.parse_args()
    link = None if args.link == "none" else args.link
    if link is not None:
        try:
            rate_bits(link)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    if args.downloads < 0 or args.download_hosts < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--downloads >= 0, --download-hosts >= 1, --rate and --duration > 0")
    opts = Options(
        duration=args.duration,
        rate=args.rate,
        downloads=args.downloads,
        download_hosts=args.download_hosts,
        archive_mib=args.archive_mib,
        link=link,
        queue_ms=args.queue_ms,
        shaping=args.shaping,
        max_uploads=args.max_uploads or args.download_hosts,
        timeout=args.timeout,
        stall=args.stall,
        connections=args.connections,
        fake_peers=args.fake_peers,
        seed=args.seed,
        phases=[p for p in PHASES if p in (args.phase or PHASES)],
        profile=args.profile,
    )
    return opts, args.json, args.no_snapshot


def log_errors(host: Host, marks: list[int]) -> dict[str, list[str]]:
    """The node's ERROR records (with their tracebacks) during the load, and after it (when
    the downloads were cut)."""
    text = host.log_path.read_bytes() if host.log_path is not None else b""
    start, end = (marks + [len(text)] * 2)[:2]
    out: dict[str, list[str]] = {}
    for when, part in (("during", text[start:end]), ("after", text[end:])):
        records: list[str] = []
        inside = False  # in an ERROR record (its traceback follows on the next lines)
        for line in part.decode(errors="replace").splitlines():
            if line[:4].isdigit():  # a new record: "2026-11-22 06:36:46,827 LEVEL ..."
                inside = " ERROR " in line
                if inside:
                    records.append(line)
            elif inside:
                records[-1] += "\n" + line
        out[when] = records
    return out


def run_phase(bed: Testbed, name: str, opts: Options, node: int) -> dict[str, Any]:
    """One server under the load; the node is already up (it made the baselines' answers)."""
    if name == "node":
        pid = node
    elif name == "aiohttp":
        pid = bed.start_trivial()
    else:
        pid = bed.start_nginx()
    log(f"{name}: loading for {opts.duration:g} s")
    raw = bed.load(pid, opts.seed, profile=opts.profile and name == "node")
    out: dict[str, Any] = {"raw": raw, "figures": figures(raw, opts)}
    if name == "node":
        out["log_errors"] = log_errors(bed.server, raw["log_marks"])
        for when, records in out["log_errors"].items():
            for record in records[:2]:
                log(f"node log, {when} the load: {record}")
    f = out["figures"]
    log(
        f"{name}: p50 {ms(f['latency']['p50'])} p99 {ms(f['latency']['p99'])} max "
        f"{ms(f['latency']['max'])}; errors {f['errors'] or 0} / {f['download_errors'] or 0}; "
        f"{f['throughput'] * 8 / 1e6:.0f} Mbit/s; server CPU {pct_text(f['server_cpu'])}, "
        f"VmHWM {mib(f['rss_hwm'])}; generator {pct_text(f['gen_meta_cpu'])} + "
        f"{pct_text(f['gen_download_cpu'])}, lateness p99 {ms(f['lateness']['p99'])}; "
        f"machine busy {pct_text(f['machine']['busy'])}, others {pct_text(f['machine']['others'])}"
    )
    bed.stop_server()
    return out


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], json.loads(sys.argv[3]))
        return
    opts, json_path, no_snapshot = parse_args()
    root = Path(tempfile.mkdtemp(prefix="aienv-bench-load-"))
    results: dict[str, Any] = {"phases": {}, "load_average_before": os.getloadavg()}
    bed: Testbed | None = None
    started = time.monotonic()
    try:
        if no_snapshot:
            results["code"] = {"commit": git("rev-parse", "--short", "HEAD"), "snapshot": False}
        else:
            results["code"] = snapshot(root)
        bed = Testbed(root, opts)
        pid = bed.start_node()
        bed.prepare_node()  # the baselines serve what the node answered
        results["archive"], results["bodies"] = bed.archive, bed.bodies
        if "node" not in opts.phases:
            bed.stop_server()  # the baselines listen on its port
        time.sleep(SETTLE)
        for name in opts.phases:
            results["phases"][name] = run_phase(bed, name, opts, pid)
    finally:
        if bed is not None:
            bed.close()
        shutil.rmtree(root, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    log(f"total {time.monotonic() - started:.0f} s")
    print("\n".join(report(results, opts)))
    if json_path:
        settings = dataclasses.asdict(opts)
        json_path.write_text(json.dumps({"settings": settings, **results}, default=str))


if __name__ == "__main__":
    main()
