"""Every failure a person can hit in the core loop: a clear message, a non-zero
exit or a 4xx, and nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aienv.api.app import routes_only
from aienv.discovery import codec
from tests.integration.conftest import HELLO, no_leftovers, shared_by, wait_for
from tests.lan import Host, Lan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nodes(lan: Lan) -> Lan:
    a, b, _ = lan.hosts
    a.start("alpha")
    b.start("beta")
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 3.0, "beta sees alpha/hello")
    return lan


def fails(host: Host, *args: str, code: int) -> str:
    res = host.cli(*args, check=False)
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    return " ".join(res.stderr.split())


def test_unknown_peer(nodes: Lan) -> None:
    _, b, _ = nodes.hosts
    msg = fails(b, "clone", "nobody/hello", code=4)
    assert "no peer 'nobody'" in msg and "alpha" in msg


def test_unknown_workspace(nodes: Lan) -> None:
    _, b, _ = nodes.hosts
    msg = fails(b, "clone", "alpha/nothing", code=1)
    assert "does not share a workspace 'nothing'" in msg and "hello" in msg
    assert b.api("/workspaces").json()["workspaces"] == []
    no_leftovers(b)


def test_name_taken(nodes: Lan) -> None:
    a, _, _ = nodes.hosts
    msg = fails(a, "clone", "10.77.0.1/hello", code=5)
    assert "already exists" in msg


def test_peer_gone(nodes: Lan) -> None:
    _, b, _ = nodes.hosts
    msg = fails(b, "clone", "10.77.0.99:37778/hello", code=1)
    assert "cannot reach peer" in msg
    no_leftovers(b)


def test_bad_source_and_names(nodes: Lan) -> None:
    _, b, _ = nodes.hosts
    assert "PEER/WORKSPACE" in fails(b, "clone", "justaname", code=1)
    assert "PEER/WORKSPACE" in fails(b, "clone", "alpha/../etc", code=1)
    assert "not a node name" in fails(b, "clone", "al pha/hello", code=1)
    assert "1-63 characters" in fails(b, "clone", "alpha/Hello", code=1)
    assert "1-63 characters" in fails(b, "create", "Bad Name", code=1)
    assert "1-63 characters" in fails(b, "clone", "alpha/hello", "--as", "x/y", code=1)


def test_create_errors(nodes: Lan, tmp_path: Path) -> None:
    _, b, _ = nodes.hosts
    assert "is not a folder" in fails(b, "create", "x", "--from", str(tmp_path / "missing"), code=1)
    assert "has no workspace.yaml" in fails(b, "create", "x", "--from", str(tmp_path), code=1)
    (tmp_path / "workspace.yaml").write_text("apiVersion: aienv/v1\nname: x\nbogus: 1\n")
    assert "bogus: unknown key" in fails(b, "create", "x", "--from", str(tmp_path), code=1)
    assert "no template 'nope'" in fails(b, "create", "x", "--template", "nope", code=4)
    assert b.api("/workspaces").json()["workspaces"] == []
    no_leftovers(b)


def test_create_from_template_then_delete(nodes: Lan) -> None:
    _, b, _ = nodes.hosts
    b.cli("create", "tpl")
    listed = json.loads(b.cli("list", "--json").stdout)
    assert [w["name"] for w in listed] == ["tpl"]
    assert "already exists" in fails(b, "create", "tpl", code=5)
    b.cli("delete", "tpl", "--yes")
    assert json.loads(b.cli("list", "--json").stdout) == []
    assert not (b.home / "workspaces" / "tpl").exists()
    assert "no workspace 'tpl'" in fails(b, "delete", "tpl", "--yes", code=4)


def test_create_refuses_links_and_special_files(nodes: Lan, tmp_path: Path) -> None:
    a, _, _ = nodes.hosts
    before = json.loads(a.cli("list", "--json").stdout)
    for kind in ("link", "fifo"):
        src = tmp_path / kind
        shutil.copytree(HELLO, src)
        if kind == "link":  # a link out of the folder: sharing it would share /etc/shadow
            (src / "data" / "shadow").symlink_to("/etc/shadow")
            expected = "is a symbolic link"
        else:
            os.mkfifo(src / "data" / "pipe")
            expected = "is not a regular file or folder"
        msg = fails(a, "create", kind, "--from", str(src), code=1)
        assert expected in msg, msg
        assert not (a.home / "workspaces" / kind).exists()
    assert json.loads(a.cli("list", "--json").stdout) == before
    no_leftovers(a)


def test_cli_without_a_node(nodes: Lan) -> None:
    _, _, c = nodes.hosts  # gamma runs no node in this module
    msg = fails(c, "list", code=3)
    assert "cannot reach the aienv node" in msg and "aienv serve" in msg


def test_stop_and_logs_unknown(nodes: Lan) -> None:
    _, b, _ = nodes.hosts
    assert "no environment" in fails(b, "stop", "ghost", code=4)
    assert "no environment" in fails(b, "logs", "ghost.web", code=4)


def test_api_errors_are_json_4xx(nodes: Lan) -> None:
    a, _, _ = nodes.hosts
    base = f"{a.url}/api/v1"
    r = httpx.get(f"{base}/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for name in ("..%2F..%2Fetc", "%2E%2E", "%2Eaienv", "a%5Cb", "x%00y"):  # traversal in a name
        for path in (f"/workspaces/{name}", f"/workspaces/{name}/archive"):
            r = httpx.get(base + path)
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert "1-63 characters" in r.json()["error"]["message"], path
    r = httpx.get(f"{base}/workspaces/Bad%20Name")
    assert r.status_code == 400 and "1-63 characters" in r.json()["error"]["message"]
    r = httpx.put(f"{base}/workspaces")
    assert r.status_code == 405 and "error" in r.json()
    # oversized headers are refused by the HTTP parser itself (a plain-text 400, before
    # any handler), and the node goes on answering
    r = httpx.get(f"{base}/node", headers={"X-Big": "x" * 9000})
    assert r.status_code == 400
    r = httpx.get(f"{base}/node", headers={f"X-{i}": "y" * 1000 for i in range(200)})
    assert 400 <= r.status_code < 500
    assert httpx.get(f"{base}/node").status_code == 200


# what a peer may read, written out here so that a route made public by mistake fails
PEER_READS = {
    "/api/v1/node",
    "/api/v1/node/announcement",
    "/api/v1/peers",
    "/api/v1/workspaces",
    "/api/v1/templates",
    "/api/v1/workspaces/{name}",
    "/api/v1/workspaces/{name}/archive",
    "/api/v1/archives",
    "/api/v1/archives/{digest}",
    "/api/v1/archives/{digest}/pieces",
    "/api/v1/archives/{digest}/files",
    "/api/v1/system",
    "/api/v1/stream",
    "/api/v1/openapi.json",
    "/",
    "/ui",
}


def app_routes() -> list[tuple[str, str]]:
    """Every (method, route) of the node's app, read from the app itself."""
    app = routes_only()  # the routes only: no node behind them
    return sorted(
        {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    )


def test_every_route_but_the_peer_reads_is_refused_from_the_lan(nodes: Lan) -> None:
    a, b, _ = nodes.hosts
    base = a.url  # the test runs on the bridge: a LAN address, not loopback
    digest = httpx.get(f"{base}/api/v1/workspaces/hello").json()["archive"]["digest"]
    values = {
        "name": "hello",
        "digest": digest,
        "id": "x",
        "address": b.ip,
        "user": "ops",
        "variable": "API_KEY",
    }
    values["peer"] = values["node"] = "beta"
    routes = app_routes()
    assert {path for _, path in routes} >= PEER_READS
    clones = a.cli("clones", "--json").stdout
    refused = []
    for method, path in routes:
        url = base + ("/ui/app.css" if path == "/ui" else path.format(**values))
        if method in ("GET", "HEAD") and path in PEER_READS:
            if path != "/api/v1/stream":  # (a stream that does not end: tested elsewhere)
                r = httpx.request(method, url)
                assert r.status_code in (200, 404), (method, path, r.status_code)
            continue
        r = httpx.request(method, url, json={"name": "x", "source": "beta/x"})
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        expected = "admin_only"
        if path.startswith("/api/v1/member/"):  # a paired node's, signed (test_group.py)
            expected = "pairing_needs_tls" if path.endswith("/join") else "not_paired"
        if method != "HEAD":  # (no body)
            assert r.json()["error"]["code"] == expected, (method, path)
        refused.append(path)
    assert len(refused) > 40  # every change, and the admin's reads (clones, events, auth…)
    # nothing was changed: hello is still shared, no admin user, no clone, no peer added
    assert "hello" in shared_by(b, "alpha")
    assert "ops" not in a.cli("auth", "show").stdout
    assert a.cli("clones", "--json").stdout == clones
    assert json.loads(a.cli("peer", "list", "--json").stdout) == []
    # what is shared stays readable by peers; what is not shared is invisible
    a.cli("create", "private", "--from", str(HELLO))
    try:
        listed = httpx.get(f"{base}/api/v1/workspaces").json()["workspaces"]
        assert [w["name"] for w in listed] == ["hello"]
        for path in ("/workspaces/private", "/workspaces/private/archive"):
            r = httpx.get(f"{base}/api/v1{path}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "workspace_not_found"
        assert "path" not in httpx.get(f"{base}/api/v1/workspaces/hello").json()
    finally:
        a.cli("delete", "private", "--yes")


def test_bad_bodies_from_localhost(nodes: Lan) -> None:
    a, _, _ = nodes.hosts
    script = """
import httpx, json
b = "http://127.0.0.1:37778/api/v1"
out = []
out.append(httpx.post(b + "/workspaces", content=b"{not json").status_code)
out.append(httpx.post(b + "/workspaces", json=["a"]).status_code)
r = httpx.post(b + "/workspaces", json={"name": "x", "colour": 1})
out.append(r.json()["error"]["message"])
out.append(httpx.post(b + "/workspaces", json={"name": 5}).status_code)
out.append(httpx.post(b + "/clones", json={"source": "alpha/x", "launch": "maybe"}).status_code)
out.append(httpx.post(b + "/workspaces", content=b"x" * 100000).status_code)
r = httpx.post(b + "/workspaces", json={"name": "x" * 70000})  # valid JSON, too large
out.append([r.status_code, r.json()["error"]["message"]])
r = httpx.post(b + "/workspaces", content=b"[" * 5000 + b"]" * 5000,
               headers={"Content-Type": "application/json"})
out.append([r.status_code, r.json()["error"]["message"]])
# a web page in a local browser: a text/plain "simple request", a foreign Origin, a rebound Host
out.append(httpx.post(b + "/clones", content=b'{"source": "10.9.9.9/x"}',
                      headers={"Content-Type": "text/plain"}).status_code)
out.append(httpx.post(b + "/workspaces/hello/unshare", json={},
                      headers={"Origin": "http://evil.example"}).status_code)
out.append(httpx.post(b + "/workspaces/hello/unshare", json={},
                      headers={"Host": "evil.example:37778"}).status_code)
print(json.dumps(out))
"""
    res = a.run(sys.executable, "-c", script)
    codes = json.loads(res.stdout)
    assert codes[0] == 400 and codes[1] == 400
    assert "colour: unknown field" in codes[2]
    assert codes[3] == 400 and codes[4] == 400
    assert codes[5] in (400, 413)
    assert codes[6] == [400, "request body larger than 65536 bytes"]
    assert codes[7][0] == 400 and "not valid JSON" in codes[7][1]  # (a RecursionError)
    assert codes[8] == 400 and codes[9] == 403 and codes[10] == 403
    assert "hello" in shared_by(nodes.hosts[1], "alpha")  # nothing was changed


def test_bad_datagrams_are_counted_not_fatal(nodes: Lan) -> None:
    a, _, _ = nodes.hosts
    before = a.api("/node").json()["discovery"]["counters"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.77.0.254"))
        for payload in (b"", b"AIEN", b"garbage" * 40, b"AIEN\x01\x01\x00\x10" + bytes(200)):
            sock.sendto(payload, (a.ip, 37777))
            sock.sendto(payload, ("239.255.77.77", 37777))
    wait_for(
        lambda: (
            a.api("/node").json()["discovery"]["counters"].get("dropped", 0)
            >= before.get("dropped", 0) + 6
        ),
        3.0,
        "drops counted",
    )
    counters = a.api("/node").json()["discovery"]["counters"]
    assert counters.get("dropped_too_short", 0) >= 2
    assert counters.get("dropped_bad_magic", 0) >= 1
    assert counters.get("dropped_bad_signature", 0) + counters.get("dropped_bad_length", 0) >= 1
    assert "hello" in shared_by(nodes.hosts[1], "alpha")  # still announcing


def test_hash_mismatch_from_a_lying_peer(nodes: Lan, tmp_path: Path) -> None:
    """A peer whose signed announcement names one digest but whose archive is another."""
    _, b, c = nodes.hosts
    liar = Path(__file__).with_name("liar_peer.py")
    proc = subprocess.Popen(c.nsenter(sys.executable, str(liar), "digest"), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        msg = fails(b, "clone", f"{c.ip}:37778/evil", code=1)
        assert "sha256" in msg and "nothing was installed" in msg
        assert b.api("/workspaces").json()["workspaces"] == []
        no_leftovers(b)
    finally:
        proc.terminate()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def test_serve_errors_are_one_line(nodes: Lan, tmp_path: Path) -> None:
    a, _, c = nodes.hosts
    home = str(tmp_path / "home")
    msg = fails(c, "serve", "--home", home, "--interface", "nope0", code=1)
    assert "no IPv4 interface 'nope0'" in msg
    msg = fails(c, "serve", "--home", home, "--name", "Bad Name", code=1)
    assert "invalid node name" in msg
    # alpha's node already listens on 37778 in its namespace
    msg = fails(a, "serve", "--home", home, "--no-dnssd", code=1)
    assert "is another aienv node running" in msg
    # a second node on alpha's home folder is refused before it touches anything
    msg = fails(c, "serve", "--home", str(a.home), "--no-dnssd", code=1)
    assert "already running with the home folder" in msg
    assert json.loads(a.cli("list", "--json").stdout)  # alpha is unharmed


MANY = """
import httpx, os, pathlib, shutil, sys, tempfile
b = "http://127.0.0.1:37778/api/v1/workspaces"
for i in range(40):
    src = pathlib.Path(tempfile.mkdtemp()) / "ws"
    shutil.copytree(sys.argv[1], src)
    (src / "data" / "unique.bin").write_bytes(os.urandom(64))  # a distinct digest each
    httpx.post(b, json={"name": f"many-{i:02d}", "from": str(src)}, timeout=30).raise_for_status()
    shutil.rmtree(src.parent)
    httpx.post(f"{b}/many-{i:02d}/share", json={}, timeout=30).raise_for_status()
"""


def test_clone_from_a_peer_whose_list_does_not_fit_a_datagram(nodes: Lan) -> None:
    a, b, _ = nodes.hosts
    res = a.run(sys.executable, "-c", MANY, str(HELLO))
    assert res.returncode == 0, res.stderr
    # on the wire, alpha's datagram cannot hold 41 workspaces ...
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", 37777))
        mreq = socket.inet_aton("239.255.77.77") + socket.inet_aton("10.77.0.254")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.settimeout(5)
        while True:
            ann = codec.decode(sock.recvfrom(2000)[0])
            if isinstance(ann, codec.Announcement) and ann.body.name == "alpha":
                break
    assert ann.body.more and len(ann.body.workspaces) < 41
    # ... so beta fetches the full, signed list over HTTP (several TCP segments) and keeps it
    names = lambda: {  # noqa: E731
        w["name"]
        for p in b.api("/peers").json()["peers"]
        if p["name"] == "alpha"
        for w in p["workspaces"]
    }
    wait_for(lambda: "many-39" in names(), 3.0, "beta holds alpha's full list")
    time.sleep(2.5)  # more truncated datagrams arrive meanwhile
    assert len(names()) == 41
    res = b.cli("clone", "alpha/many-39", "--no-launch")
    assert "installed" in res.stdout


def test_process_that_exits_before_it_is_ready(nodes: Lan, tmp_path: Path) -> None:
    _, b, _ = nodes.hosts
    (tmp_path / "workspace.yaml").write_text(
        "apiVersion: aienv/v1\nname: quitter\nenvironments:\n"
        '  - name: web\n    process: {command: ["sh", "-c", "echo bye; exit 0"]}\n'
        "    endpoints: [{name: http, port: 8000}]\n"
    )
    b.cli("create", "quitter", "--from", str(tmp_path))
    msg = fails(b, "launch", "quitter", code=1)
    assert "before its endpoints answered" in msg and "bye" in msg
    (env,) = json.loads(b.cli("ps", "--json").stdout)
    assert env["state"] == "failed"
    b.cli("delete", "quitter", "--yes")
