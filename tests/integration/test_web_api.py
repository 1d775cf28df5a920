"""What the web UI stands on, over real HTTP between namespace nodes: the live feed
(versioned, replayed after a reconnect, names hidden from peers), editing and
importing workspaces, and a peer's workspace planned against this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import HELLO, no_leftovers, shared_by, wait_for
from tests.lan import Host, Lan, admin_call

pytestmark = pytest.mark.integration

READER = r"""
import sys, time, httpx
headers = {"Last-Event-ID": sys.argv[2]} if sys.argv[2] else {}
end = time.monotonic() + float(sys.argv[1])
try:
    with httpx.stream("GET", "http://127.0.0.1:37778/api/v1/stream", headers=headers,
                      timeout=httpx.Timeout(5, read=float(sys.argv[1]))) as r:
        for line in r.iter_lines():
            print(line, flush=True)
            if time.monotonic() > end:
                break
except httpx.ReadTimeout:
    pass
"""


def parse_events(text: str) -> list[dict[str, object]]:
    """The events of an SSE text: each with its id, event name and decoded data."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, object] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name in ("id", "event"):
                fields[name] = value
            elif name == "data":
                fields["data"] = json.loads(value)
        if "event" in fields:
            events.append(fields)
    return events


def read_stream(host: Host, seconds: float, last_id: str = "") -> subprocess.Popen[str]:
    """Start reading the host's feed as an admin (from inside its namespace)."""
    return subprocess.Popen(
        host.nsenter(sys.executable, "-c", READER, str(seconds), last_id),
        stdout=subprocess.PIPE,
        text=True,
    )


def upload(host: Host, path: str, data: bytes, content_type: str) -> tuple[int, dict[str, object]]:
    code = (
        "import httpx, sys; r = httpx.post('http://127.0.0.1:37778/api/v1' + sys.argv[1], "
        "content=sys.stdin.buffer.read(), headers={'Content-Type': sys.argv[2]}, timeout=60); "
        "print(r.status_code); print(r.text)"
    )
    res = subprocess.run(
        host.nsenter(sys.executable, "-c", code, path, content_type),
        input=data,
        capture_output=True,
        check=True,
    )
    status, _, text = res.stdout.decode().partition("\n")
    return int(status), json.loads(text)


@pytest.fixture
def pair(stopped: Lan) -> tuple[Host, Host]:
    a, b, _ = stopped.hosts
    a.start("alpha")
    b.start("beta")
    return a, b


def test_stream_sends_changes_and_replays_what_a_reconnect_missed(pair: tuple[Host, Host]) -> None:
    a, _ = pair
    reader = read_stream(a, 3)
    time.sleep(0.5)
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    out, _ = reader.communicate(timeout=20)
    events = parse_events(out)
    hello = events[0]
    assert hello["event"] == "hello"
    assert hello["data"]["resync"] is True and hello["data"]["admin"] is True  # type: ignore[index]
    boot = hello["data"]["boot"]  # type: ignore[index]
    changes = [e["data"] for e in events if e["event"] == "change"]
    kinds = [(c["kind"], c["key"]) for c in changes]  # type: ignore[index]
    assert ("workspace", "hello") in kinds and ("share", "hello") in kinds
    versions = [c["version"] for c in changes]  # type: ignore[index]
    assert versions == list(range(versions[0], versions[0] + len(versions))), "a gap or a repeat"
    assert all(e["id"] == f"{boot}:{e['data']['version']}" for e in events[1:])  # type: ignore[index]

    # a reader that saw only up to the first change gets the rest replayed, in order
    first = f"{boot}:{versions[0]}"
    out, _ = read_stream(a, 1, first).communicate(timeout=20)
    again = parse_events(out)
    assert again[0]["event"] == "hello" and again[0]["data"]["resync"] is False  # type: ignore[index]
    replayed = [e["data"]["version"] for e in again if e["event"] == "change"]  # type: ignore[index]
    assert replayed[: len(versions) - 1] == versions[1:]

    # another run's id, or one from the future: read everything again
    for stale in ("0123456789abcdef:3", f"{boot}:999999", "garbage"):
        out, _ = read_stream(a, 0.5, stale).communicate(timeout=20)
        assert parse_events(out)[0]["data"]["resync"] is True  # type: ignore[index]


def test_a_peer_stream_carries_no_names_and_costs_nothing_idle(pair: tuple[Host, Host]) -> None:
    a, _ = pair
    assert a.proc is not None
    node = psutil.Process(a.proc.pid)
    seen: list[str] = []
    with httpx.stream("GET", f"{a.url}/api/v1/stream", timeout=10) as resp:  # from outside
        assert resp.headers["content-type"] == "text/event-stream"
        cpu = sum(node.cpu_times()[:2])
        time.sleep(2)  # an idle guest stream must not spin the node's loop
        idle = sum(node.cpu_times()[:2]) - cpu
        a.cli("create", "secret", "--from", str(HELLO))
        for line in resp.iter_lines():
            seen.append(line)
            if line.startswith("data") and '"kind": "workspace"' in line:
                break
    assert idle < 0.5, f"the node used {idle:.2f} s of CPU in 2 s serving an idle stream"
    events = parse_events("\n".join(seen) + "\n\n")
    assert events[0]["data"]["admin"] is False  # type: ignore[index]
    assert "secret" not in "\n".join(seen)
    created = [e for e in events if e["event"] == "change" and e["data"]["kind"] == "workspace"]  # type: ignore[index]
    assert created and created[0]["data"]["key"] == ""  # type: ignore[index]


def test_edit_rewrites_the_yaml_and_peers_see_the_new_tags(pair: tuple[Host, Host]) -> None:
    a, b = pair
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5, "beta sees hello")
    edit = {"description": "edited in the UI", "tags": ["demo", "gpu-free"]}
    status, ws = admin_call(a, "PATCH", "/workspaces/hello", edit)
    assert status == 200, ws
    assert ws["description"] == "edited in the UI"  # type: ignore[index]
    yaml_text = (a.home / "workspaces" / "hello" / "workspace.yaml").read_text()
    assert "edited in the UI" in yaml_text and "gpu-free" in yaml_text

    def peer_tags() -> list[str]:
        peers = b.api("/peers").json()["peers"]
        return [
            t for p in peers for w in p["workspaces"] if w["name"] == "hello" for t in w["tags"]
        ]

    wait_for(lambda: "gpu-free" in peer_tags(), 5, "the new tag announced")

    before = yaml_text
    status, err = admin_call(a, "PATCH", "/workspaces/hello", {"tags": ["no/slashes"]})
    assert status == 422 and "tags" in err["error"]["message"]  # type: ignore[index]
    status, err = admin_call(a, "PATCH", "/workspaces/hello", {"tags": "demo"})
    assert status == 400
    status, err = admin_call(a, "PATCH", "/workspaces/hello", {"owner": "me"})
    assert status == 400 and "unknown field" in err["error"]["message"]  # type: ignore[index]
    assert (a.home / "workspaces" / "hello" / "workspace.yaml").read_text() == before
    assert httpx.patch(f"{a.url}/api/v1/workspaces/hello", json={"tags": []}).status_code == 403


def test_export_then_import_and_hostile_imports_leave_nothing(
    pair: tuple[Host, Host], tmp_path: Path
) -> None:
    a, b = pair
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    exported = httpx.get(f"{a.url}/api/v1/workspaces/hello/archive", timeout=10).content
    status, ws = upload(b, "/workspaces/import?name=copy&file=hello.zip", exported,
                        "application/zip")  # fmt: skip
    assert status == 201, ws
    assert ws["origin"] == {"kind": "import", "file": "hello.zip"}  # type: ignore[comparison-overlap]
    assert (b.home / "workspaces" / "copy" / "app").is_dir()

    escape = tmp_path / "escape.zip"
    with zipfile.ZipFile(escape, "w") as zf:
        zf.writestr("workspace.yaml", "apiVersion: aienv/v1\nname: evil\n")
        zf.writestr("../../outside.txt", "escaped")
    cases = [
        (escape.read_bytes(), "application/zip", 422, "unsafe_archive"),
        (b"not a zip at all", "application/zip", 422, "unsafe_archive"),
        (exported, "application/json", 400, "invalid_input"),
        (b"", "application/zip", 400, "invalid_input"),
    ]
    for data, ctype, want, code in cases:
        status, err = upload(b, "/workspaces/import?name=evil", data, ctype)
        assert (status, err["error"]["code"]) == (want, code), err  # type: ignore[index]
    status, err = upload(b, "/workspaces/import?name=copy", exported, "application/zip")
    assert status == 409
    status, err = upload(b, "/workspaces/import?name=../x", exported, "application/zip")
    assert status == 400
    assert not (b.home / "workspaces" / "evil").exists()
    assert not list(b.home.rglob("outside.txt")) and not list(b.home.parent.rglob("outside.txt"))
    no_leftovers(b)


def test_peer_workspace_is_planned_against_this_machine(
    pair: tuple[Host, Host], tmp_path: Path
) -> None:
    a, b = pair
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "workspace.yaml").write_text(
        "apiVersion: aienv/v1\nname: huge\nenvironments:\n"
        "  - name: main\n    requires: {memory: 64TiB, gpu: required}\n"
        "    process: {command: [sleep, '60']}\n"
        "  - name: odd\n    runtime: nosuch\n    options: {}\n"
    )
    a.cli("create", "huge", "--from", str(huge))
    a.cli("share", "huge")
    a.cli("create", "private", "--from", str(HELLO))
    wait_for(lambda: {"hello", "huge"} <= shared_by(b, "alpha"), 5, "beta sees both")

    status, got = admin_call(b, "GET", "/peers/alpha/workspaces/hello")
    assert status == 200, got
    assert got["workspace"]["name"] == "hello"  # type: ignore[index]
    [web] = got["plans"]  # type: ignore[index]
    assert web["fit"] in ("fits", "fits with less") and web["plan"]["ports"]

    status, got = admin_call(b, "GET", "/peers/alpha/workspaces/huge")
    assert status == 200, got
    main, odd = got["plans"]  # type: ignore[index]
    assert main["fit"] == "does not fit"
    assert any("memory" in s for s in main["shortfalls"])
    assert any("GPU" in s for s in main["shortfalls"])
    assert odd["fit"] == "cannot run here" and "nosuch" in odd["shortfalls"][0]

    status, err = admin_call(b, "GET", "/peers/alpha/workspaces/private")  # not shared
    assert status == 404, err
    status, err = admin_call(b, "GET", "/peers/nobody/workspaces/hello")
    assert status == 404 and err["error"]["code"] == "peer_not_found"  # type: ignore[index]
    r = httpx.get(f"{b.url}/api/v1/peers/alpha/workspaces/hello", timeout=5)
    assert r.status_code == 403  # it makes the node call out: admin only


def test_the_node_serves_its_openapi_document(pair: tuple[Host, Host]) -> None:
    a, b = pair
    document = b.api("/openapi.json").json()  # from another machine: a peer read
    assert document["openapi"] == "3.1.0"
    assert document["paths"]["/api/v1/clones"]["post"]["x-aienv-role"] == "admin"
    assert document["components"]["schemas"]["StartClone"]["required"] == ["source"]
    assert a.api("/openapi.json").json() == document  # built once, the same for all
