"""Identity bound to the connection, by default: the certificate made on first start,
its fingerprint in the signed announcement, TLS for peers and plain HTTP for the
node's own browser on one port, clones pinned to it, an impostor refused before
anything is sent to it, a relayed announcement moving nothing and a relay seeing
no credential, a new certificate accepted only through a new signed announcement,
and the CLI trusting the local node's certificate alone."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import HELLO, no_leftovers, shared_by, wait_for
from tests.integration.test_access import PASSWORD, clone_with, set_password
from tests.lan import AIENV, Host, Lan

pytestmark = pytest.mark.integration

IMPOSTOR = Path(__file__).with_name("impostor_tls.py")


def served_fingerprint(url: str) -> str:
    """sha256 of the certificate the server at ``url`` presents (read without trusting it)."""
    host, port = url.removeprefix("https://").split(":")
    pem = ssl.get_server_certificate((host, int(port)))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def test_clones_pin_the_certificate_named_in_the_signed_announcement(
    stopped: Lan, tmp_path: Path
) -> None:
    a, b, c = stopped.hosts
    a.start("alpha")  # no flag: TLS is on by default
    b.start("beta")
    node = a.api("/node").json()  # plain HTTP on the same port, for the node's own browser
    fingerprint = node["tls"]["fingerprint"]
    assert served_fingerprint(f"https://{a.ip}:37778") == fingerprint
    assert (a.home / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    set_password(a, "workspace-password", "set", "hello")
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5, "beta sees hello")
    (peer,) = [p for p in b.api("/peers").json()["peers"] if p["name"] == "alpha"]
    assert peer["url"] == f"https://{a.ip}:37778"  # peers speak TLS to it

    done = clone_with(b, "alpha/hello", PASSWORD)
    assert done["state"] == "installed", done["error"]
    assert str(done["peer_url"]).startswith("https://")

    # an impostor on gamma replays alpha's signed announcement with its own certificate:
    # the clone fails at the handshake, and the password never reaches it
    announcement = tmp_path / "announcement.bin"
    announcement.write_bytes(httpx.get(f"{a.url}/api/v1/node/announcement").content)
    log = tmp_path / "impostor.log"
    proc = subprocess.Popen(
        c.nsenter(sys.executable, str(IMPOSTOR), str(announcement), str(log)),
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        b.cli("delete", "hello", "--yes")
        failed = clone_with(b, f"{c.ip}/hello", PASSWORD)
        assert failed["state"] == "failed"
        assert "is not the one its signed announcement names" in str(failed["error"])
        requests = log.read_text().splitlines()
        assert requests and all(line == "/api/v1/node/announcement -" for line in requests)
        no_leftovers(b)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    # alpha makes a new certificate: peers take it from its next signed announcement
    a.stop()
    old_cert = tmp_path / "old-cert.pem"
    old_cert.write_bytes((a.home / "tls" / "cert.pem").read_bytes())
    for name in ("cert.pem", "key.pem"):
        (a.home / "tls" / name).unlink()
    a.start("alpha")
    renewed = a.api("/node").json()["tls"]["fingerprint"]
    assert renewed != fingerprint
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5, "beta sees alpha again")
    done = clone_with(b, "alpha/hello", PASSWORD)
    assert done["state"] == "installed", done["error"]

    # the CLI trusts the node's certificate alone: an old one is refused, clearly
    res = subprocess.run(
        a.nsenter(AIENV, "node"),
        env={
            "AIENV_URL": "https://127.0.0.1:37778",
            "AIENV_CERT": str(old_cert),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    said = " ".join(res.stderr.split())
    assert res.returncode == 3 and "is not the node's certificate" in said, said
    assert "Traceback" not in res.stderr


RELAY = Path(__file__).with_name("relay.py")


def relay(host: Host, node: Host, victim: Host, log: Path, *proxy: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        host.nsenter(sys.executable, str(RELAY), node.url, victim.ip, str(log), *proxy),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def ended(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def alpha_at(observer: Host) -> str:
    (peer,) = [p for p in observer.api("/peers").json()["peers"] if p["name"] == "alpha"]
    return str(peer["address"])


def protected_hello(lan: Lan) -> tuple[Host, Host, Host]:
    """alpha shares hello behind a workspace password; beta runs beside it (the victim);
    gamma (the relay) runs no node."""
    a, b, c = lan.hosts
    a.start("alpha")
    b.start("beta")
    a.cli("create", "hello", "--from", str(HELLO))
    a.cli("share", "hello")
    set_password(a, "workspace-password", "set", "hello")
    return a, b, c


def test_a_relayed_announcement_moves_nothing_and_the_clone_goes_to_the_real_node(
    stopped: Lan, tmp_path: Path
) -> None:
    """The attack: gamma fetches alpha's freshly signed announcement and sends it to beta
    from its own address (it used to move "alpha" to gamma, and the clone, with its
    password, went through gamma). Now beta moves alpha only to an address that proves it
    holds alpha's certificate; gamma's cannot, so alpha stays, and the clone with its
    password goes to alpha."""
    a, b, c = protected_hello(stopped)
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5, "beta sees hello")
    impostor_log = tmp_path / "impostor.log"
    impostor_log.write_text("")
    announcement = tmp_path / "announcement.bin"
    announcement.write_bytes(httpx.get(f"{a.url}/api/v1/node/announcement").content)
    impostor = subprocess.Popen(  # gamma answers on 37778 with a certificate of its own
        c.nsenter(sys.executable, str(IMPOSTOR), str(announcement), str(impostor_log)),
        stdout=subprocess.PIPE,
    )
    try:
        assert impostor.stdout is not None and impostor.stdout.readline().strip() == b"ready"

        def refused() -> bool:
            events = json.loads(b.cli("events", "--json", "--limit", "200").stdout)
            return any("which could not prove it is alpha" in e["message"] for e in events
                       if e["kind"] == "security")  # fmt: skip

        sender = relay(c, a, b, tmp_path / "relay.log")
        try:
            wait_for(refused, 10, "beta refuses the move")
        finally:
            ended(sender)
        assert alpha_at(b) == a.ip
        done = clone_with(b, "alpha/hello", PASSWORD)
        assert done["state"] == "installed", done["error"]
        assert done["peer_url"] == f"https://{a.ip}:37778"
        assert impostor_log.read_text() == ""  # no request reached gamma, let alone a password
    finally:
        ended(impostor)


def test_a_relay_that_passes_the_connection_on_sees_no_password(
    stopped: Lan, tmp_path: Path
) -> None:
    """A clone by the relay's address: the relay passes TCP through to alpha, so alpha's
    own signed announcement and certificate answer, and every byte after the public
    announcement is encrypted end to end: the clone installs from alpha, and the relay
    never sees the password."""
    a, b, c = protected_hello(stopped)
    seen = tmp_path / "relay.log"
    proxy = relay(c, a, b, seen, "--proxy", a.ip)
    try:
        done = clone_with(b, f"{c.ip}/hello", PASSWORD)
        assert done["state"] == "installed", done["error"]
        assert done["peer_url"] == f"https://{c.ip}:37778"  # through the relay
        crossed = seen.read_bytes()
        assert len(crossed) > 1000  # the clone went through it
        assert PASSWORD.encode() not in crossed and b"Authorization" not in crossed
        assert base64.b64encode(f"aienv:{PASSWORD}".encode()) not in crossed
    finally:
        ended(proxy)
