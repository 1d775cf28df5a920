"""The CLI's own output, command by command, against a fake node: a real aiohttp server
on 127.0.0.1 that answers the few endpoints a command asks with canned JSON. What
is under test is how the CLI renders what a node says (and what it writes
where), not the node: the integration tests drive real nodes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from aienv import __version__
from aienv.cli.main import app

Answer = Any | Callable[[web.Request], Any]


class FakeNode:
    """A fake of the node's HTTP API: ``routes`` maps (method, path under /api/v1) to
    the JSON it answers (or a function of the request giving it); anything else is a
    404 in the node's error shape. Requests are recorded."""

    def __init__(self, routes: dict[tuple[str, str], Answer]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str]] = []
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _answer(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/api/v1")
        self.seen.append((request.method, path))
        answer = self.routes.get((request.method, path))
        if answer is None:
            error = {"code": "not_found", "message": f"no route {request.method} {path}"}
            return web.json_response({"error": error}, status=404)
        return web.json_response(answer(request) if callable(answer) else answer)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> FakeNode:
        self._thread.start()
        assert self._ready.wait(10), "the fake node did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def fake_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[dict[tuple[str, str], Answer]], FakeNode]]:
    """Start a fake node with the given routes, as ``AIENV_URL``; stopped after the test."""
    started: list[FakeNode] = []

    def start(routes: dict[tuple[str, str], Answer]) -> FakeNode:
        fake = FakeNode(routes).__enter__()
        started.append(fake)
        monkeypatch.setenv("AIENV_URL", fake.url)
        monkeypatch.setenv("AIENV_HOME", str(tmp_path / "home"))  # no certificate there
        return fake

    yield start
    for fake in started:
        fake.__exit__()


StartNode = Callable[[dict[tuple[str, str], Answer]], FakeNode]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


NODE = {
    "id": "c0d0901eb37a382dbb885218cd1455bb",
    "name": "alpha",
    "version": "0.1.0",
    "public_key": "cf" * 32,
    "http_port": 37778,
    "tls": {"fingerprint": "ab" * 32},
    "addresses": ["10.77.0.1", "192.168.1.20"],
    "admin": True,
    "uptime": 12.5,
    "state_version": 5,
    "discovery": {
        "instance": "ea9921cd2c90bc36",
        "interval": 10.0,
        "group": "239.255.77.77",
        "port": 37777,
        "interfaces": [{"name": "eth0", "address": "10.77.0.1"}],
        "dnssd": True,
        "counters": {"accepted": 7, "dropped": 2, "dropped_bad_signature": 2, "sent": 14},
    },
    "runtimes": {
        "container": {"available": False, "reason": "no Docker engine at unix:///x.sock"},
        "process": {"available": True, "reason": ""},
    },
    "uploads": {"peers": 1, "limit": 4, "refused": 3},
}


def test_version_prints_the_package_version() -> None:
    code, stdout, _ = run("--version")
    assert (code, stdout) == (0, f"aienv {__version__}\n")


def test_node_is_rendered_as_name_value_lines_not_a_dict(fake_node: StartNode) -> None:
    fake_node({("GET", "/node"): NODE})
    code, stdout, _ = run("node")
    assert code == 0, stdout
    lines = [" ".join(line.split()) for line in stdout.splitlines()]
    assert lines[0] == "alpha"
    for expected in (
        "id c0d0901eb37a382dbb885218cd1455bb",
        "version aienv 0.1.0",
        "addresses 10.77.0.1, 192.168.1.20",
        f"TLS certificate sha256 {'ab' * 32}",
        "announcing on eth0 10.77.0.1 every 10 s",
        "runtimes process available",
        "container not available: no Docker engine at unix:///x.sock",
        "uploads 1 peers now (at most 4 at once), 3 refused",
        "discovery counters",
        "accepted 7",
        "dropped_bad_signature 2",
        "sent 14",
    ):
        assert expected in lines, (expected, stdout)
    assert "{" not in stdout and "'" not in stdout  # no Python dict


SHARED = {
    "name": "hello",
    "archive": {"size": 2048, "digest": "3285ebe329f7dd16" + "0" * 48, "files": 3},
    "added": [],
}


def test_share_without_packing_prints_its_one_line_and_no_blank_one(
    fake_node: StartNode,
) -> None:
    node = fake_node(
        {("POST", "/workspaces/hello/share"): SHARED, ("GET", "/transfers"): {"transfers": []}}
    )
    code, stdout, stderr = run("share", "hello")
    assert code == 0
    assert stdout == "sharing hello (2.0 KiB, sha256 3285ebe329f7dd16…)\n"
    assert stderr == ""  # the transient bar drew nothing: there was no packing to show
    assert ("POST", "/workspaces/hello/share") in node.seen


SYSTEM = {"host": "alpha", "cpu": {"logical": 2}, "processes": [{"pid": 1}]}


@pytest.mark.parametrize("as_json", [True, False])
def test_system_with_output_writes_the_file_only(
    fake_node: StartNode, tmp_path: Path, as_json: bool
) -> None:
    fake_node({("GET", "/system"): SYSTEM})
    target = tmp_path / "inventory.json"
    code, stdout, stderr = run(
        "system", "--output", str(target), "--pretty", *(["--json"] if as_json else [])
    )
    assert code == 0
    assert stdout == ""
    assert stderr == f"wrote {target}\n"
    assert json.loads(target.read_text()) == SYSTEM
    assert target.read_text().startswith("{\n  ")


WORKSPACES = {
    "workspaces": [
        {"name": "hello", "version": "1.0.0", "runtimes": ["process"], "shared": True,
         "archive": {"size": 2048}, "origin": {"kind": "folder"}},
        {"name": "copy", "version": "2.1.0", "runtimes": ["process", "vm"], "shared": False,
         "archive": None, "origin": {"kind": "clone", "peer_name": "bob", "workspace": "lab"}},
    ]
}  # fmt: skip


def test_list_prints_an_aligned_table(fake_node: StartNode) -> None:
    fake_node({("GET", "/workspaces"): WORKSPACES})
    code, stdout, _ = run("list")
    assert code == 0
    assert stdout.splitlines() == [
        "name   version  runtimes    shared  size     origin",
        "hello  1.0.0    process     yes     2.0 KiB  folder",
        "copy   2.1.0    process,vm  no      -        bob/lab",
    ]


HEAVY = ("pydantic", "httpx", "httpcore", "rich", "aiohttp", "aienv.config")
LIST_AND_TELL = """
import sys
from aienv.cli.main import main
sys.argv = ["aienv", "list"]
try:
    main()
finally:
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r} or m in {heavy!r})
    print("loaded:", " ".join(heavy), file=sys.stderr)
"""


def test_list_loads_no_module_it_does_not_use(fake_node: StartNode, tmp_path: Path) -> None:
    """Most of the CLI's latency is imports (the bar: ``aienv list`` < 150 ms median,
    scripts/bench cli): a plain-HTTP command that prints a table needs no pydantic
    (typer's value conversion), no third-party HTTP library, no rich, no node settings."""
    fake_node({("GET", "/workspaces"): WORKSPACES})
    res = subprocess.run(
        [sys.executable, "-c", LIST_AND_TELL.format(heavy=HEAVY)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("name   version"), res.stdout
    assert res.stderr.strip() == "loaded:", res.stderr


def test_values_typer_would_convert_are_still_converted_and_checked(
    fake_node: StartNode,
) -> None:
    """The CLI skips typer's pydantic for values that need no conversion (coercion.py);
    a number is still a number, and a bad one is still refused as typer refuses it."""
    asked: list[dict[str, str]] = []

    def events(request: web.Request) -> dict[str, Any]:
        asked.append(dict(request.query))
        return {"events": []}

    fake_node({("GET", "/events"): events})
    assert run("events", "-n", "5")[0] == 0 and asked == [{"limit": "5"}]
    assert run("events")[0] == 0 and asked[-1] == {"limit": "50"}  # the default
    for bad, why in (("0", "greater than or equal to 1"), ("x", "valid integer")):
        code, _, stderr = run("events", "-n", bad)
        assert code == 2 and why in " ".join(stderr.replace("│", " ").split()), stderr
    assert len(asked) == 2
