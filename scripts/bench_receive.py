"""Receive-path benchmark (run it with scripts/bench receive): what it costs a client,
in CPU-seconds per GiB, to take an archive's ranges over TLS and write and hash them,
by three ways of reading.

A server process (aiohttp over TLS, with a certificate made as a node makes its
own) serves a file of random bytes; ``lo`` is shaped with ``tc tbf`` to ``--rate``
so bytes arrive at a LAN's pace, not all at once. Each client runs in its own
process, fetches the file as 32 MiB ranges with two in flight (as a clone from
one source does), writes every byte to its offset in a file and hashes it per
4 MiB piece, and reports its own CPU time (``getrusage``):

- ``aiohttp``: the node's path until the eighth pass (``aiohttp`` stream, ``iter_chunked``);
- ``threads``: ``http.client`` over a blocking ``ssl`` socket, one thread per range
  in flight, with a 10 s socket timeout, reading into one reused buffer;
- ``buffered``: an ``asyncio.BufferedProtocol`` on the event loop, decrypting into
  its buffer (a minimal HTTP/1.1 reader: the design ``aienv/peer/ranges.py`` took).

The clients run in turn, ``--runs`` times each; the medians are printed as a
Markdown table for docs/benchmarks.md. Every process it starts is ended by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import filecmp
import hashlib
import http.client
import json
import os
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aienv.security.tls import ensure_certificate  # noqa: E402

RUN = 32 * 1024 * 1024  # bytes per range request
PIECE = 4 * 1024 * 1024  # bytes per hashed piece
BUFFER = 1024 * 1024
IN_FLIGHT = 2
CLIENTS = ("aiohttp", "threads", "buffered")


def serve(path: Path, tls: Path, port: int) -> None:
    from aiohttp import web

    async def whole(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/f", whole)
    context = ensure_certificate(tls, "bench").server_context()
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=context, print=None)


class Sink:
    """Each range's bytes to their offset in ``fd``, hashed per piece."""

    def __init__(self, fd: int, start: int) -> None:
        self.fd, self.offset = fd, start
        self.piece_end = start + PIECE
        self.hasher = hashlib.sha256()

    def take(self, data: memoryview) -> None:
        while data:
            part = data[: self.piece_end - self.offset]
            os.pwrite(self.fd, part, self.offset)
            self.hasher.update(part)
            self.offset += len(part)
            data = data[len(part) :]
            if self.offset == self.piece_end:
                self.hasher.hexdigest()
                self.hasher, self.piece_end = hashlib.sha256(), self.piece_end + PIECE


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ranges(size: int) -> list[int]:
    return list(range(0, size, RUN))


async def with_aiohttp(fd: int, size: int, port: int) -> None:
    import aiohttp

    starts, context = ranges(size), client_context()
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while starts:
                start = starts.pop(0)
                sink = Sink(fd, start)
                headers = {"Range": f"bytes={start}-{start + RUN - 1}"}
                url = f"https://127.0.0.1:{port}/f"
                async with session.get(url, headers=headers, ssl=context) as response:
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        sink.take(memoryview(chunk))

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def with_threads(fd: int, size: int, port: int) -> None:
    starts, lock, context = ranges(size), threading.Lock(), client_context()

    def worker() -> None:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        buffer = memoryview(bytearray(BUFFER))
        while True:
            with lock:
                if not starts:
                    return
                start = starts.pop(0)
            connection.request("GET", "/f", headers={"Range": f"bytes={start}-{start + RUN - 1}"})
            response, sink = connection.getresponse(), Sink(fd, start)
            while got := response.readinto(buffer):
                sink.take(buffer[:got])

    threads = [threading.Thread(target=worker) for _ in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Buffered(asyncio.BufferedProtocol):
    """One kept-alive connection; ``fetch`` one range at a time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = memoryview(bytearray(BUFFER))
        self.head = bytearray()
        self.filled = 0
        self.left = 0
        self.in_body = False
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def fetch(self, start: int) -> asyncio.Future[None]:
        self.sink, self.left = Sink(self.fd, start), RUN
        self.head, self.in_body, self.filled = bytearray(), False, 0
        self.done = asyncio.get_running_loop().create_future()
        request = (
            f"GET /f HTTP/1.1\r\nHost: bench\r\nRange: bytes={start}-{start + RUN - 1}\r\n\r\n"
        )
        self.transport.write(request.encode())
        return self.done

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer[self.filled :] if self.in_body else self.buffer[: 64 * 1024]

    def buffer_updated(self, nbytes: int) -> None:
        if not self.in_body:
            self.head += self.buffer[:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            rest = self.head[end + 4 :]
            self.buffer[: len(rest)] = rest
            self.in_body, nbytes = True, len(rest)
        self.filled += nbytes
        if self.filled == len(self.buffer) or self.filled >= self.left:
            self.sink.take(self.buffer[: self.filled])
            self.left -= self.filled
            self.filled = 0
            if self.left <= 0 and self.done is not None:
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed"))


async def with_buffered(fd: int, size: int, port: int) -> None:
    starts, loop = ranges(size), asyncio.get_running_loop()

    async def worker() -> None:
        transport, protocol = await loop.create_connection(
            lambda: Buffered(fd), "127.0.0.1", port, ssl=client_context()
        )
        while starts:
            await protocol.fetch(starts.pop(0))
        transport.close()

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def client(name: str, out: Path, size: int, port: int) -> None:
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, size)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before, started = usage.ru_utime + usage.ru_stime, time.monotonic()
    if name == "threads":
        with_threads(fd, size, port)
    else:
        asyncio.run((with_aiohttp if name == "aiohttp" else with_buffered)(fd, size, port))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before
    print(json.dumps({"cpu": cpu, "seconds": time.monotonic() - started}))
    os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", default="1gbit", help="tc rate of lo (default 1gbit)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    size, port = opts.size_mib * 1024 * 1024, 38443
    if opts.serve:
        return serve(opts.serve, opts.dir, port)
    if opts.client:
        return client(opts.client, opts.dir / "out.bin", size, port)
    measure(opts, size, port)


def measure(opts: argparse.Namespace, size: int, port: int) -> None:
    tbf = ["tbf", "rate", opts.rate, "burst", "512kb", "latency", "20ms"]
    subprocess.run(["tc", "qdisc", "replace", "dev", "lo", "root", *tbf], check=True)
    results: dict[str, list[float]] = {name: [] for name in CLIENTS}
    with tempfile.TemporaryDirectory(prefix="aienv-bench-receive-") as tmp:
        work = Path(tmp)
        with (work / "src.bin").open("wb") as out:
            for _ in range(opts.size_mib):
                out.write(os.urandom(1024 * 1024))
        me = [sys.executable, __file__, "--size-mib", str(opts.size_mib), "--dir", str(work)]
        server = subprocess.Popen([*me, "--serve", str(work / "src.bin")])
        try:
            time.sleep(2)
            for run in range(opts.runs):
                for name in CLIENTS:
                    done = subprocess.run([*me, "--client", name], capture_output=True, check=True)
                    if not filecmp.cmp(work / "src.bin", work / "out.bin", shallow=False):
                        raise SystemExit(f"{name}: the bytes written are not the bytes served")
                    cpu = json.loads(done.stdout)["cpu"] / (size / 2**30)
                    results[name].append(cpu)
                    print(f"run {run + 1} {name}: {cpu:.2f} CPU-s per GiB", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(10)
    report(opts, results)


def report(opts: argparse.Namespace, results: dict[str, list[float]]) -> None:
    print(
        f"`scripts/bench receive --size-mib {opts.size_mib} --runs {opts.runs}` (lo at {opts.rate})"
    )
    print()
    print("| client | CPU-s per GiB, median | runs |")
    print("|---|---|---|")
    for name, values in results.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} | {runs} |")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
