"""Access over real HTTP between namespace nodes: the LAN-only allow-list (requests and
announcements), admin users with Basic credentials from another machine, the
lockout after repeated failures, and the node password peers must give."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import (
    HELLO,
    make_big_workspace,
    no_leftovers,
    shared_by,
    wait_for,
)
from tests.lan import AIENV, BRIDGE_IP, Host, Lan, admin_call, sh

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-enough"
# credentials from another machine go over TLS (plain HTTP ones are refused); the
# certificate pin is test_tls.py's matter, access is this module's
http = httpx.Client(verify=False, timeout=5)


@pytest.fixture(autouse=True, scope="module")
def client_closed() -> Iterator[None]:
    yield
    http.close()


def set_password(host: Host, *args: str, password: str = PASSWORD) -> None:
    res = subprocess.run(
        host.nsenter(AIENV, "auth", *args, "--password-stdin"),
        input=password + "\n",
        capture_output=True,
        text=True,
        env={
            "AIENV_URL": "http://127.0.0.1:37778",
            "AIENV_HOME": str(host.home),
            "PATH": "/usr/bin:/bin",
        },
        check=False,
    )
    assert res.returncode == 0, res.stderr


def status_from(host: Host, url: str, user: str = "", password: str = "", source: str = "") -> str:
    """GET ``url`` from inside ``host``'s namespace (optionally from address ``source``):
    the status and the body."""
    code = (
        "import httpx, sys; user, pw, src = sys.argv[2:5]; "
        "t = httpx.HTTPTransport(local_address=src) if src else None; "
        "c = httpx.Client(transport=t, timeout=5, verify=False); "
        "r = c.get(sys.argv[1], auth=(user, pw) if user else None); print(r.status_code, r.text)"
    )
    res = host.run(sys.executable, "-c", code, url, user, password, source)
    return res.stdout or res.stderr


def test_requests_from_outside_the_lan_ranges_are_refused(stopped: Lan) -> None:
    a, b, _ = stopped.hosts
    b.start("beta")
    # give A and B a second, public (TEST-NET-2) address on their link: not a LAN range
    sh(*a.nsenter("ip", "addr", "add", "198.51.100.1/24", "dev", "eth0"))
    sh(*b.nsenter("ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"))
    outside = status_from(a, "http://198.51.100.2:37778/api/v1/node", source="198.51.100.1")
    assert outside.startswith("403") and "not_allowed" in outside, outside
    inside = status_from(a, f"{b.url}/api/v1/node", source=a.ip)
    assert inside.startswith("200"), inside


def test_allow_list_ignores_announcements_and_requests_from_others(stopped: Lan) -> None:
    a, b, c = stopped.hosts
    b.extra_env = {"AIENV_ALLOW": f"{a.ip}/32,{BRIDGE_IP}"}  # A, and the test itself
    try:
        a.start("alpha")
        c.start("gamma")
        b.start("beta")
    finally:
        b.extra_env = {}
    refused = status_from(c, f"{b.url}/api/v1/node")
    assert refused.startswith("403") and "not_allowed" in refused, refused
    assert status_from(a, f"{b.url}/api/v1/node").startswith("200")

    def seen() -> set[str]:  # the CLI, on loopback, always gets in
        return {p["name"] for p in json.loads(b.cli("peers", "--json").stdout)}

    wait_for(lambda: "alpha" in seen(), 5, "beta sees alpha")
    time.sleep(2)  # two more of gamma's announcement intervals
    assert "gamma" not in seen()
    counters = json.loads(b.cli("node", "--json").stdout)["discovery"]["counters"]
    assert counters["dropped_not_allowed"] > 0


def test_admin_user_from_another_machine_and_lockout(stopped: Lan) -> None:
    a, b, _ = stopped.hosts
    b.start("beta", "--tls")
    set_password(b, "admin", "add", "ops")
    stored = sqlite3.connect(b.home / "state.sqlite3").execute("SELECT hash FROM credentials")
    assert all(PASSWORD not in row[0] for row in stored)  # hashed, never in clear

    url = f"{b.url}/api/v1/workspaces"
    body = {"name": "remote", "template": "hello-web"}
    assert http.post(url, json=body).status_code == 403  # no credentials: a peer
    r = http.post(url, json=body, auth=("ops", PASSWORD), timeout=30)
    assert r.status_code == 201, r.text
    env = {"AIENV_URL": b.url, "AIENV_USER": "ops", "AIENV_PASSWORD": PASSWORD,
           "AIENV_CERT": str(b.home / "tls" / "cert.pem")}  # fmt: skip
    res = subprocess.run(
        [AIENV, "share", "remote"], env=env, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr  # the CLI, from elsewhere, with the login
    # a page on another site cannot ride on a browser's remembered login (CSRF)
    evil = {"Origin": "http://evil.example"}
    r = http.post(f"{url}/remote/unshare", json={}, auth=("ops", PASSWORD), headers=evil)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_only"
    assert http.get(f"{url}/remote").status_code == 200  # still shared
    # a password under 8 characters is refused, and the old one stays
    res = subprocess.run(
        b.nsenter(AIENV, "auth", "admin", "add", "ops", "--password-stdin"),
        input="short7!\n",
        capture_output=True,
        text=True,
        env={"AIENV_URL": "http://127.0.0.1:37778", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert res.returncode == 1 and "at least 8 characters" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr

    # credentials over plain HTTP from the LAN are refused, whatever they are
    plain = url.replace("https://", "http://")
    r = http.post(plain, json=body, auth=("ops", PASSWORD))
    assert r.status_code == 403 and r.json()["error"]["code"] == "plain_credentials", r.text
    assert "https://" in r.json()["error"]["message"]
    assert http.get(plain).status_code == 200  # without credentials: a peer's read

    r = http.post(url, json=body, auth=("ops", "wrong-password"))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    for _ in range(4):  # five failures in all lock the address
        assert http.get(url, auth=("ops", "wrong-password")).status_code == 401
    r = http.get(url, auth=("ops", "wrong-password"))
    assert r.status_code == 429 and 290 <= int(r.headers["Retry-After"]) <= 300  # 5 min
    assert "too many failed logins" in r.json()["error"]["message"]
    r = http.get(url, auth=("ops", PASSWORD))
    assert r.status_code == 429  # locked out, even with the right password now
    shown = b.cli("auth", "show").stdout
    assert "locked out" in shown and "10.77.0.254" in shown
    _, events = admin_call(b, "GET", "/events")
    assert any("locked out" in e["message"] for e in events["events"])  # type: ignore[index]
    assert status_from(a, url, "ops", PASSWORD).startswith("200")  # other addresses may

    b.cli("auth", "admin", "remove", "ops")
    removed = status_from(a, f"{b.url}/api/v1/clones", "ops", PASSWORD)
    assert removed.startswith("401"), removed  # a removed user stops working at once


def test_node_password_for_peers(stopped: Lan) -> None:
    a, b, _ = stopped.hosts
    a.start("alpha", "--tls")
    b.start("beta")
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5, "beta sees hello")
    set_password(a, "peer-password", "set")
    r = http.get(f"{a.url}/api/v1/workspaces")
    assert r.status_code == 401 and "password" in r.json()["error"]["message"]
    assert http.get(f"{a.url}/api/v1/workspaces/hello/archive").status_code == 401
    assert http.get(f"{a.url}/").status_code == 401  # the browser asks for it
    r = http.get(f"{a.url}/api/v1/workspaces", auth=("anyone", PASSWORD))
    assert r.status_code == 200 and [w["name"] for w in r.json()["workspaces"]] == ["hello"]
    r = http.post(f"{a.url}/api/v1/clones", json={"source": "x/y"}, auth=("anyone", PASSWORD))
    assert r.status_code == 403  # the peer password never gives the admin role
    # the signed announcement stays public: peers keep seeing the node
    assert http.get(f"{a.url}/api/v1/node/announcement").status_code == 200
    a.cli("auth", "peer-password", "clear")
    assert http.get(f"{a.url}/api/v1/workspaces").status_code == 200


def clone_with(host: Host, source: str, password: str | None) -> dict[str, object]:
    """Clone through the API (as the web UI does), wait for the end, return the job."""
    body: dict[str, object] = {"source": source, "launch": False}
    if password is not None:
        body["password"] = password
    status, job = admin_call(host, "POST", "/clones", body)
    assert status == 202 and isinstance(job, dict), job

    def ended() -> dict[str, object] | None:
        _, doc = admin_call(host, "GET", f"/clones/{job['id']}")
        assert isinstance(doc, dict)
        return doc if doc["state"] in ("installed", "failed", "cancelled") else None

    wait_for(ended, 60, f"clone of {source} ends")
    done = ended()
    assert done is not None
    return done


def announced(observer: Host, peer: str) -> dict[str, dict[str, object]]:
    (entry,) = [p for p in observer.api("/peers").json()["peers"] if p["name"] == peer]
    return {w["name"]: w for w in entry["workspaces"]}


def held_by(observer: Host, peer: str) -> set[str]:
    (entry,) = [p for p in observer.api("/peers").json()["peers"] if p["name"] == peer]
    return {a["digest"] for a in entry["archives"]}


def test_workspace_password_guards_details_archive_and_clones(stopped: Lan, tmp_path: Path) -> None:
    a, b, c = stopped.hosts
    a.start("alpha", "--tls")
    b.start("beta")
    c.start("gamma")
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("create", "secret", "--from", str(make_big_workspace(tmp_path / "s", 3 << 20, "secret")))
    a.cli("share", "hello")
    a.cli("share", "secret")
    digest = a.api("/workspaces/secret").json()["archive"]["digest"]
    hello_digest = a.api("/workspaces/hello").json()["archive"]["digest"]
    # gamma clones hello while it is open to all, and holds (re-serves) its archive
    assert clone_with(c, "alpha/hello", None)["state"] == "installed"
    wait_for(lambda: hello_digest in held_by(b, "gamma"), 5, "gamma announces hello's archive")

    set_password(a, "workspace-password", "set", "secret")
    wait_for(lambda: announced(b, "alpha")["secret"]["protected"], 5, "peers hear it is protected")
    assert "secret" in a.cli("auth", "show").stdout
    listed = {w["name"]: w for w in a.api("/workspaces").json()["workspaces"]}
    assert listed["secret"]["protected"] and not listed["hello"]["protected"]
    # a peer's list shows of it only what its announcement says: nothing from inside
    assert "environments" in listed["hello"] and "files" in listed["hello"]["archive"]
    summary = {"name", "version", "tags", "languages", "tools", "runtimes", "shared"}
    assert set(listed["secret"]) == {*summary, "archive", "protected"}
    assert set(listed["secret"]["archive"]) == {"digest", "size"}
    paths = [
        "/workspaces/secret",
        "/workspaces/secret/archive",
        f"/archives/{digest}",
        f"/archives/{digest}/pieces",
        f"/archives/{digest}/files",
    ]
    for path in paths:
        r = http.get(f"{a.url}/api/v1{path}")
        assert r.status_code == 401 and "workspace secret asks" in r.json()["error"]["message"]
        assert http.get(f"{a.url}/api/v1{path}", auth=("x", PASSWORD)).status_code == 200
    assert a.api("/workspaces/hello").status_code == 200  # the others stay open

    # a clone without the password, or with a wrong one, fails and leaves nothing
    failed = clone_with(b, "alpha/secret", None)
    assert failed["state"] == "failed" and "asks for a password" in str(failed["error"])
    failed = clone_with(b, "alpha/secret", "not-the-password")
    assert failed["state"] == "failed" and "refused the password" in str(failed["error"])
    no_leftovers(b)
    # with it (the CLI reads it from stdin), the clone installs
    res = subprocess.run(
        b.nsenter(AIENV, "clone", "alpha/secret", "--no-launch", "--password-stdin"),
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env={"AIENV_URL": "http://127.0.0.1:37778", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    weights = (a.home / "workspaces/secret/weights.bin").read_bytes()
    assert (b.home / "workspaces/secret/weights.bin").read_bytes() == weights
    # beta neither announces nor serves what it cloned behind a password
    time.sleep(1.5)
    assert digest not in held_by(c, "beta")
    assert http.get(f"{b.url}/api/v1/archives/{digest}").status_code == 404
    assert not (b.home / "archives" / f"{digest}.zip").exists()

    # protecting hello later: gamma, which cloned it before, stops re-serving it
    set_password(a, "workspace-password", "set", "hello")
    wait_for(lambda: hello_digest not in held_by(b, "gamma"), 5, "gamma stops announcing it")
    assert http.get(f"{c.url}/api/v1/archives/{hello_digest}").status_code == 404

    # with a node password too, a workspace's own password opens it, the node's does not
    set_password(a, "peer-password", "set", password="node-password-1")
    r = http.get(f"{a.url}/api/v1/workspaces/secret", auth=("x", "node-password-1"))
    assert r.status_code == 401
    r = http.get(f"{a.url}/api/v1/workspaces/secret", auth=("x", PASSWORD))
    assert r.status_code == 200
    assert http.get(f"{a.url}/api/v1/workspaces", auth=("x", "node-password-1")).status_code == 200

    # a deleted workspace takes its password along: a new one by that name starts open
    a.cli("auth", "peer-password", "clear")
    a.cli("delete", "secret", "--yes")
    assert "secret" not in a.cli("auth", "show").stdout
    a.cli("create", "secret", "--from", str(HELLO))
    a.cli("share", "secret")
    assert http.get(f"{a.url}/api/v1/workspaces/secret").status_code == 200


AUTOSTART = """apiVersion: aienv/v1
name: auto
environments:
  - name: web
    runtime: process
    autostart: true
    process:
      command: ["python3", "-u", "-m", "http.server", "{port.http}"]
    endpoints:
      - name: http
        port: 8000
"""


def test_a_cloned_workspace_runs_nothing_until_launched_here(stopped: Lan, tmp_path: Path) -> None:
    a, b, _ = stopped.hosts
    a.start("alpha")
    b.start("beta")
    (tmp_path / "auto").mkdir()
    (tmp_path / "auto" / "workspace.yaml").write_text(AUTOSTART)
    a.cli("create", "auto", "--from", str(tmp_path / "auto"))
    a.cli("share", "auto")
    wait_for(lambda: "auto" in shared_by(b, "alpha"), 5, "beta sees auto")
    b.cli("clone", "alpha/auto", "--no-launch")

    def environments() -> list[dict[str, object]]:
        _, data = admin_call(b, "GET", "/environments")
        assert isinstance(data, dict)
        return list(data["environments"])

    # autostart: true came from a peer: a restart of beta launches nothing
    b.stop()
    b.start("beta")
    time.sleep(3)
    assert environments() == []
    # what would run is shown before anything runs
    assert "runs command: python3 -u -m http.server" in b.cli("plan", "auto").stdout
    # once someone here launched it, autostart is theirs: it comes back after a restart
    launched = b.cli("launch", "auto").stdout
    assert "runs command: python3 -u -m http.server" in launched  # said as it launches
    b.stop()
    b.start("beta")
    wait_for(
        lambda: [e["state"] for e in environments()] == ["running"],
        20,
        "the environment launched here before autostarts",
    )
    b.cli("stop", "auto")
