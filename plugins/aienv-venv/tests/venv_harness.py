"""What the venv plugin's tests share: a wheel written by hand (so pip installs
offline), a workspace built around it, an environment using it, and a runtime
that remembers what it launched."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path
from typing import Any

from aienv.runtime.base import LaunchSpec
from aienv.workspace.manifest import Endpoint, Environment

PROBE = "aienv_venv_probe"  # a package that exists nowhere but in the test wheel
GREETING = "hello from the probe wheel"

# app/serve.py: answers with facts that show where the probe package came from
SERVER = """\
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import aienv_venv_probe


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = "\\n".join([
            aienv_venv_probe.GREETING,
            aienv_venv_probe.__file__,
            sys.prefix,
            os.environ.get("VIRTUAL_ENV", ""),
            os.environ.get("PROBE_NOTE", ""),
        ]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("serving:", aienv_venv_probe.GREETING, flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def build_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel written by hand: the files, METADATA, WHEEL and RECORD."""
    dist_info = f"{name}-{version}.dist-info"
    entries = {
        **files,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: aienv-venv-tests\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{path},{_record_hash(text.encode())},{len(text.encode())}"
        for path, text in entries.items()
    ]
    record.append(f"{dist_info}/RECORD,,")
    entries[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for arcname, text in entries.items():
            wheel.writestr(arcname, text)
    return path


def make_workspace(root: Path) -> Path:
    """``wheels/`` with the probe wheel, ``requirements.txt`` naming it, ``app/serve.py``."""
    build_wheel(
        root / "wheels", PROBE, "1.0", {f"{PROBE}/__init__.py": f"GREETING = {GREETING!r}\n"}
    )
    (root / "requirements.txt").write_text(f"{PROBE}==1.0\n")
    (root / "app").mkdir()
    (root / "app" / "serve.py").write_text(SERVER)
    return root


def venv_environment(**options: Any) -> Environment:
    """An environment running the probe server; ``options`` override the defaults."""
    base: dict[str, Any] = {
        "requirements": "requirements.txt",
        "command": ["python", "serve.py", "{port.http}"],
        "workdir": "app",
        "env": {"PROBE_NOTE": "set by options.env"},
        "pip_args": ["--no-index", "--find-links", "wheels"],
    }
    return Environment(
        name="web",
        runtime="venv",
        endpoints=[Endpoint(name="http", port=8000)],
        options={**base, **options},
    )


class Harness:
    """A venv runtime that remembers what it launched, so teardown stops what a test
    left running."""

    def __init__(self) -> None:
        from aienv_venv import VenvRuntime  # here, so conftest can report a missing install

        self.runtime = VenvRuntime()
        self.live: list[dict[str, Any]] = []

    async def launch(self, spec: LaunchSpec) -> dict[str, Any]:
        handle = await self.runtime.launch(spec)
        self.live.append(handle)
        return handle

    async def stop(self, handle: dict[str, Any]) -> int | None:
        """Stop it and reap it; its exit code."""
        self.live.remove(handle)
        await self.runtime.stop(handle, 5.0)
        return await self.runtime.wait(handle)

    async def close(self) -> None:
        for handle in list(self.live):
            await self.stop(handle)
