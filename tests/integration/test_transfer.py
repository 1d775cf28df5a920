"""The transfer engine on the namespace LAN: serving with Range/ETag and upload
slots, resuming after either side restarts, several sources, corrupt sources,
and a disk that fills up mid-download."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import make_big_workspace, no_leftovers, shared_by, wait_for
from tests.lan import Host, Lan, admin_call, sh

pytestmark = pytest.mark.integration

MIB = 1 << 20
LIAR = Path(__file__).with_name("liar_peer.py")


def share_big(host: Host, root: Path, size: int, name: str = "big") -> dict[str, Any]:
    host.cli("create", name, "--from", str(make_big_workspace(root, size, name)))
    host.cli("share", name, timeout=300)
    archive: dict[str, Any] = host.api(f"/workspaces/{name}").json()["archive"]
    return archive


def shared_copy(lan: Lan, tmp_path: Path, size: int) -> tuple[dict[str, Any], Path]:
    """Start alpha and beta, share ``size`` random bytes from alpha; return the archive and
    a copy of its file (for a lying peer to serve)."""
    a, b, _ = lan.hosts
    a.start("alpha")
    b.start("beta")
    archive = share_big(a, tmp_path / "big", size)
    copy = tmp_path / "archive.zip"
    copy.write_bytes((a.home / "archives" / f"{archive['digest']}.zip").read_bytes())
    return archive, copy


def start_clone(host: Host, source: str, as_name: str | None = None) -> str:
    body: dict[str, Any] = {"source": source, "launch": False}
    if as_name:
        body["as"] = as_name
    status, doc = admin_call(host, "POST", "/clones", body)
    assert status in (200, 201, 202), doc
    assert isinstance(doc, dict)
    return str(doc["id"])


def clone_doc(host: Host, clone_id: str) -> dict[str, Any]:
    status, doc = admin_call(host, "GET", f"/clones/{clone_id}")
    assert status == 200 and isinstance(doc, dict), doc
    return doc


def wait_clone(host: Host, clone_id: str, timeout: float = 120.0) -> dict[str, Any]:
    wait_for(
        lambda: clone_doc(host, clone_id)["state"] in ("installed", "failed", "cancelled"),
        timeout,
        f"clone {clone_id} ends",
    )
    return clone_doc(host, clone_id)


def same_files(a: Host, b: Host, name: str, as_name: str | None = None) -> bool:
    left = (a.home / "workspaces" / name / "weights.bin").read_bytes()
    right = (b.home / "workspaces" / (as_name or name) / "weights.bin").read_bytes()
    return hashlib.sha256(left).digest() == hashlib.sha256(right).digest()


def test_archive_is_served_with_range_etag_and_length(stopped: Lan, tmp_path: Path) -> None:
    a, b, _ = stopped.hosts
    a.start("alpha")
    archive = share_big(a, tmp_path / "big", 3 * MIB)
    digest, size = archive["digest"], archive["size"]
    url = f"{a.url}/api/v1/archives/{digest}"
    # from another host on the LAN (not loopback): a peer's download
    whole = b.run("curl", "-sf", "-D", "-", "-o", "/dev/null", url).stdout.lower()
    assert f'etag: "{digest}"' in whole and f"content-length: {size}" in whole
    part = b.run("curl", "-s", "-D", "-", "-o", "/dev/null", "-r", "100-199", url).stdout.lower()
    assert "206" in part.split("\r\n")[0]
    assert f"content-range: bytes 100-199/{size}" in part and "content-length: 100" in part
    stale = b.run(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
        "-r", "0-9", "-H", 'If-Range: "0000"', url,
    ).stdout  # fmt: skip
    assert stale == f"200 {size}"  # another version asked for: the whole file
    beyond = b.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-r", f"{size}-", url)
    assert beyond.stdout == "416"
    # a suffix range (RFC 9110): the last 100 bytes, and nothing for the last 0
    tail = b.run("curl", "-s", "-D", "-", "-o", str(tmp_path / "tail"), "-r", "-100", url).stdout
    assert f"content-range: bytes {size - 100}-{size - 1}/{size}" in tail.lower()
    held = a.home / "archives" / f"{digest}.zip"
    assert (tmp_path / "tail").read_bytes() == held.read_bytes()[-100:]
    none = b.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-r", "-0", url)
    assert none.stdout == "416"
    # several ranges: the whole file (RFC 9110 allows it), not a refusal
    many = b.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                 "-r", "0-9,100-109", url)  # fmt: skip
    assert many.stdout == f"200 {size}"

    # If-None-Match: a list, compared weakly, as curl, wget and browsers send it
    def status(if_none_match: str) -> str:
        header = f"If-None-Match: {if_none_match}"
        return b.run(
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", header, url
        ).stdout

    for tags in (f'W/"{digest}"', f'"other", "{digest}"', "*"):
        assert status(tags) == "304", tags
    assert status('W/"other"') == "200"
    assert "last-modified: " in whole  # an archive never changes once written
    with httpx.Client() as http:
        r = http.get(f"{a.url}/api/v1/archives/{'0' * 64}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_held"
        assert http.get(f"{a.url}/api/v1/archives/zz").status_code == 400
        pieces = http.get(f"{url}/pieces").json()
        assert pieces["have"] == "all" and len(pieces["pieces"]) == 1


# a downloader that reads a little and resets the connection (SO_LINGER 0)
LEAVER = """
import socket, struct, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port))
s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n".encode())
got = 0
while got < 1 << 20:
    got += len(s.recv(1 << 16))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
"""


def test_a_downloader_leaving_mid_body_is_no_error(stopped: Lan, tmp_path: Path) -> None:
    """Every cancelled clone leaves its sources this way: the node logs no error or
    traceback for it (it used to, and a broken pipe even became a 500) and serves on."""
    a, b, _ = stopped.hosts
    a.start("alpha")
    digest = share_big(a, tmp_path / "big", 48 * MIB)["digest"]  # more than socket buffers
    path = f"/api/v1/archives/{digest}"
    for _ in range(3):
        left = b.run(sys.executable, "-c", LEAVER, a.ip, "37778", path)
        assert left.returncode == 0, left.stderr
    time.sleep(1)  # the node's next write fails at once; an absence is checked here
    assert "Traceback" not in a.log() and "Error handling request" not in a.log(), a.log()
    assert b.run("curl", "-sf", "-o", "/dev/null", f"{a.url}{path}").returncode == 0


def test_uploads_beyond_the_limit_wait_in_line_then_get_503(stopped: Lan, tmp_path: Path) -> None:
    a, b, c = stopped.hosts
    a.extra_env = {"AIENV_MAX_UPLOADS": "1"}
    try:
        a.start("alpha")
    finally:
        a.extra_env = {}
    b.extra_env = c.extra_env = {"AIENV_MAX_SOURCES": "1"}
    try:
        b.start("beta")
        c.start("gamma")
    finally:
        b.extra_env = c.extra_env = {}
    archive = share_big(a, tmp_path / "big", 24 * MIB)
    stopped.shape(a, "24mbit")  # beta's clone takes ~8 s: longer than a wait in line
    first = start_clone(b, f"{a.ip}/big")
    wait_for(lambda: clone_doc(b, first)["bytes_done"] > 0, 20, "beta downloading")
    asked = time.monotonic()
    busy = c.run(
        "curl", "-s", "-D", "-", f"{a.url}/api/v1/archives/{archive['digest']}", "-r", "0-99",
    ).stdout  # fmt: skip
    assert time.monotonic() - asked > 2.5  # it waited in line (3 s) before the 503
    assert busy.startswith("HTTP/1.1 503") and "retry-after: 1" in busy.lower()
    assert '"code": "busy"' in busy
    second = start_clone(c, f"{a.ip}/big")
    wait_for(
        lambda: any(s["state"] == "busy" for s in clone_doc(c, second)["sources"]),
        20,
        "gamma waits for a free upload slot",
    )
    assert wait_clone(b, first)["state"] == "installed"
    done = wait_clone(c, second)
    assert done["state"] == "installed", done["error"]
    uploads = a.api("/node").json()["uploads"]
    assert uploads["refused"] >= 2 and uploads["queued"] >= 2
    assert same_files(a, c, "big")


# a downloader that asks for the whole archive and never reads a byte of it
HOG = """
import socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, port))
s.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n".encode())
print("asked", flush=True)
time.sleep(120)
"""


def test_a_peer_that_stops_reading_loses_its_upload_slot(stopped: Lan, tmp_path: Path) -> None:
    """A downloader that never reads held its slot for as long as it liked: with every slot
    held so, other peers got 503 and a single-source clone failed. Now a slice not taken
    within send_timeout ends the connection, and the clone gets the slot."""
    a, b, c = stopped.hosts
    a.extra_env = {"AIENV_MAX_UPLOADS": "1", "AIENV_SEND_TIMEOUT": "2"}
    try:
        a.start("alpha")
    finally:
        a.extra_env = {}
    c.start("gamma")
    digest = share_big(a, tmp_path / "big", 32 * MIB)["digest"]
    hog = subprocess.Popen(
        c.nsenter(sys.executable, "-c", HOG, a.ip, "37778", f"/api/v1/archives/{digest}"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == "asked"
        wait_for(lambda: a.api("/node").json()["uploads"]["peers"] == 1, 10, "the hog's slot")
        asked = time.monotonic()
        served = b.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-r", "0-9",
                       f"{a.url}/api/v1/archives/{digest}").stdout  # fmt: skip
        # the one slot was the hog's: curl waited in line until the hog lost it
        assert served == "206" and time.monotonic() - asked > 0.5
        started = time.monotonic()
        b.start("beta")
        done = wait_clone(b, start_clone(b, f"{a.ip}/big"))
        assert done["state"] == "installed", done["error"]
        assert time.monotonic() - started < 30
        assert "took nothing for 2 s: its upload ends" in a.log()
    finally:
        hog.kill()
        hog.communicate()


def clone_under_way(lan: Lan, tmp_path: Path) -> tuple[Host, Host, dict[str, Any], str]:
    """alpha shares 40 MiB over a 40 Mbit/s uplink; beta's clone of it is a third done."""
    a, b, _ = lan.hosts
    a.start("alpha")
    b.start("beta")
    archive = share_big(a, tmp_path / "big", 40 * MIB)
    lan.shape(a, "40mbit")
    clone_id = start_clone(b, f"{a.ip}/big")
    wait_for(lambda: clone_doc(b, clone_id)["bytes_done"] >= 12 * MIB, 30, "a third arrived")
    return a, b, archive, clone_id


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_clone_resumes_after_the_client_node_is_killed(
    stopped: Lan, tmp_path: Path, how: signal.Signals
) -> None:
    a, b, archive, clone_id = clone_under_way(stopped, tmp_path)
    wait_for(lambda: clone_doc(b, clone_id)["bytes_done"] >= 28 * MIB, 30, "most arrived")
    verified = clone_doc(b, clone_id)["bytes_done"]
    # the pieces inside the 40 MiB file go straight into it: the partial archive holds
    # only those that may start before the file exists (its end, asked for first, then
    # the file's header piece and what the second request slot fetched meanwhile: at
    # most five 4 MiB pieces), not the 28 MiB verified
    part = b.home / "partial" / f"clone-{clone_id}.zip.part"
    assert part.stat().st_blocks * 512 <= 20 * MIB + 64 * 1024
    b.stop(how)
    b.start("beta")
    done = wait_clone(b, clone_id)
    assert done["state"] == "installed", done["error"]
    if how == signal.SIGTERM:  # a node that stops keeps every verified piece
        assert done["resumed"] >= verified
    else:  # a crash keeps what the partial archive held: the pieces asked for first
        assert done["resumed"] >= 8 * MIB
    # fetched twice: what was in flight, and after a crash what had gone into the file
    again = verified - done["resumed"] if how == signal.SIGKILL else 0
    assert done["bytes_received"] < archive["size"] + again + 12 * MIB
    assert same_files(a, b, "big")
    no_leftovers(b)


def test_clone_resumes_after_the_serving_node_restarts(stopped: Lan, tmp_path: Path) -> None:
    a, b, archive, clone_id = clone_under_way(stopped, tmp_path)
    a.stop(signal.SIGKILL)
    wait_for(
        lambda: any(s["error"] for s in clone_doc(b, clone_id)["sources"]),
        15,
        "beta notices alpha is gone",
    )
    a.start("alpha")
    done = wait_clone(b, clone_id)
    assert done["state"] == "installed", done["error"]
    assert done["bytes_received"] < archive["size"] + 12 * MIB
    assert same_files(a, b, "big")


def test_failover_to_a_second_source(stopped: Lan, tmp_path: Path) -> None:
    a, b, c = stopped.hosts
    a.start("alpha")
    b.start("beta")
    c.start("gamma")
    archive = share_big(a, tmp_path / "big", 32 * MIB)
    # gamma clones first, so it holds the archive and announces it
    first = wait_clone(c, start_clone(c, f"{a.ip}/big"))
    assert first["state"] == "installed", first["error"]
    wait_for(
        lambda: any(
            x["digest"] == archive["digest"]
            for p in b.api("/peers").json()["peers"]
            if p["name"] == "gamma"
            for x in p["archives"]
        ),
        5,
        "beta hears that gamma holds the archive",
    )
    stopped.shape(a, "30mbit")
    stopped.shape(c, "30mbit")
    clone_id = start_clone(b, "alpha/big")
    wait_for(lambda: clone_doc(b, clone_id)["bytes_done"] >= 8 * MIB, 30, "download under way")
    stopped.set_link(a, False)  # alpha drops off the LAN mid-transfer
    done = wait_clone(b, clone_id)
    assert done["state"] == "installed", done["error"]
    by_name = {s["name"]: s for s in done["sources"]}
    assert by_name["gamma"]["bytes"] > 0 and by_name["alpha"]["bytes"] > 0
    assert by_name["gamma"]["bytes"] + by_name["alpha"]["bytes"] == archive["size"]
    assert same_files(a, b, "big")


def test_a_clone_keeps_one_copy_and_does_not_serve_a_file_edited_since(
    stopped: Lan, tmp_path: Path
) -> None:
    a, b, _ = stopped.hosts
    a.start("alpha")
    b.start("beta")
    archive = share_big(a, tmp_path / "big", 8 * MIB)
    digest = archive["digest"]
    assert wait_clone(b, start_clone(b, f"{a.ip}/big"))["state"] == "installed"
    held = b.home / "archives" / f"{digest}.zip"
    assert held.stat().st_size == archive["size"]
    # the 8 MiB file is on disk once: in the workspace (the archive gives its copy back
    # just after the clone, in the background)
    wait_for(lambda: held.stat().st_blocks * 512 < MIB, 5, "the kept archive gives its copy back")
    url = f"{b.url}/api/v1/archives/{digest}"
    # beta still serves the whole archive, byte for byte, from its workspace's file
    got = tmp_path / "from-beta.zip"
    a.run("curl", "-sf", "-o", str(got), url)
    assert hashlib.sha256(got.read_bytes()).hexdigest() == digest
    with httpx.Client() as http:
        assert http.get(f"{url}/pieces", params={"fields": "have"}).json()["have"] == "all"
        # the person edits the file on beta: beta no longer offers those bytes
        weights = b.home / "workspaces" / "big" / "weights.bin"
        weights.write_bytes(weights.read_bytes()[::-1])
        whole = a.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url)
        assert whole.stdout == "409"
        assert http.get(f"{url}/pieces", params={"fields": "have"}).json()["have"] != "all"
    b.cli("delete", "big", "--yes")  # the workspace goes, and its archive with it
    wait_for(lambda: not held.exists(), 5, "beta's kept archive is deleted")


def run_liar(host: Host, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(host.nsenter(sys.executable, str(LIAR), *args), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def stop_liar(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(5)
    assert proc.stdout is not None
    proc.stdout.close()


def test_corrupt_source_is_caught_and_its_pieces_fetched_elsewhere(
    stopped: Lan, tmp_path: Path
) -> None:
    a, b, c = stopped.hosts
    archive, copy = shared_copy(stopped, tmp_path, 24 * MIB)
    liar = run_liar(c, "corrupt", str(copy))
    try:
        wait_for(
            lambda: any(p["name"] == "liar" for p in b.api("/peers").json()["peers"]),
            5,
            "beta hears the liar",
        )
        stopped.shape(a, "40mbit")  # the honest origin is slower: the liar gets asked
        done = wait_clone(b, start_clone(b, f"{a.ip}/big"))
        assert done["state"] == "installed", done["error"]
        by_name = {s["name"]: s for s in done["sources"]}
        assert by_name["liar"]["state"] == "dropped" and by_name["liar"]["bytes"] == 0
        assert "corrupt" in by_name["liar"]["error"]
        assert by_name["alpha"]["bytes"] == archive["size"]
        assert same_files(a, b, "big")
    finally:
        stop_liar(liar)


def test_corrupt_only_source_fails_with_a_clear_error(stopped: Lan, tmp_path: Path) -> None:
    a, b, c = stopped.hosts
    _, copy = shared_copy(stopped, tmp_path, 6 * MIB)
    a.stop()  # the honest holder leaves: the liar is the only source
    wait_for(lambda: not b.api("/peers").json()["peers"], 5, "beta forgets alpha")
    liar = run_liar(c, "corrupt", str(copy), "origin")
    try:
        res = b.cli("clone", f"{c.ip}/evil", check=False)
        assert res.returncode == 1
        msg = " ".join(res.stderr.split())
        assert "corrupted data" in msg and "nothing was installed" in msg, msg
        assert b.api("/workspaces").json()["workspaces"] == []
        no_leftovers(b)
    finally:
        stop_liar(liar)


def test_disk_filling_up_mid_download_fails_cleanly(stopped: Lan, tmp_path: Path) -> None:
    a, _, c = stopped.hosts
    small = tmp_path / "small-home"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(small))
    old_home = c.home
    try:
        a.start("alpha")
        share_big(a, tmp_path / "big", 32 * MIB)
        c.home = small
        c.start("gamma")
        stopped.shape(a, "40mbit")
        wait_for(lambda: "big" in shared_by(c, "alpha"), 3.0, "gamma sees big")
        clone_id = start_clone(c, "alpha/big")
        wait_for(lambda: clone_doc(c, clone_id)["bytes_done"] > 0, 20, "download under way")
        # something else fills the disk while the clone runs
        sh("dd", "if=/dev/zero", f"of={small}/filler", "bs=1M", "count=200", check=False)
        done = wait_clone(c, clone_id)
        assert done["state"] == "failed" and "disk filled up" in done["error"], done["error"]
        (small / "filler").unlink()
        assert c.api("/workspaces").json()["workspaces"] == []
        no_leftovers(c)
        assert list((small / "workspaces").iterdir()) == []
        # once there is room again, the same clone goes through, with no node restart
        done = wait_clone(c, start_clone(c, "alpha/big"))
        assert done["state"] == "installed", done["error"]
        assert [w["name"] for w in c.api("/workspaces").json()["workspaces"]] == []  # unshared
        assert (small / "workspaces" / "big" / "weights.bin").stat().st_size == 32 * MIB
    finally:
        c.stop()
        c.home = old_home
        sh("umount", str(small), check=False)
