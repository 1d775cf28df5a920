"""A program that reserves far more address space than it uses (as model servers,
JVMs and CUDA programs do) runs under a memory plan on a node that may not use
cgroups (issue 18): the node applies no address-space limit, which would kill it,
and says before the launch that its memory is not limited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import running_endpoint
from tests.lan import Host, Lan

pytestmark = pytest.mark.integration

HOSTS = 1
SERVER = """import http.server, mmap, sys
reserved = mmap.mmap(-1, 4 << 30)  # 4 GiB of address space, 1 MiB of it touched
reserved[: 1 << 20] = bytes(1 << 20)

class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"reserved {len(reserved) >> 30} GiB".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("", int(sys.argv[1])), Page).serve_forever()
"""


@pytest.fixture(scope="module")
def node(lan: Lan) -> Iterator[Host]:
    (host,) = lan.hosts
    host.extra_env = {"AIENV_CGROUPS": "false"}  # as a node that may not make cgroups
    host.start("alpha")
    yield host
    host.stop()


def test_a_large_reservation_runs_under_a_small_memory_plan_without_cgroups(
    node: Host, tmp_path: Path
) -> None:
    folder = tmp_path / "reserver"
    folder.mkdir()
    (folder / "server.py").write_text(SERVER)
    manifest = {
        "apiVersion": "aienv/v1",
        "name": "reserver",
        "environments": [{
            "name": "api",
            "requires": {"memory": "96MiB"},
            "process": {"command": ["python3", "server.py", "{port.http}"]},
            "endpoints": [{"name": "http", "port": 18555}],
        }],
    }  # fmt: skip
    (folder / "workspace.yaml").write_text(yaml.safe_dump(manifest))
    node.cli("create", "reserver", "--from", str(folder))
    launched = node.cli("launch", "reserver")
    assert "its memory is not limited: cgroups are off" in launched.stdout, launched.stdout
    url = running_endpoint(node, "reserver")["url"]
    assert node.run("curl", "-sf", url).stdout == "reserved 4 GiB"
    node.cli("stop", "reserver")
