"""TLS between namespace nodes: the certificate made on first start, its fingerprint
in the signed announcement, clones pinned to it, an impostor refused before anything
is sent to it, a new certificate accepted only through a new signed announcement, and
the CLI trusting the local node's certificate alone."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import HELLO, no_leftovers, shared_by, wait_for
from tests.integration.test_access import PASSWORD, clone_with, set_password
from tests.lan import AIENV, Lan

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
    a.start("alpha", "--tls")
    b.start("beta", "--tls")
    node = a.api("/node").json()
    fingerprint = node["tls"]["fingerprint"]
    assert served_fingerprint(a.url) == fingerprint
    assert (a.home / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(httpx.HTTPError):  # plain HTTP gets nothing from a TLS node
        httpx.get(f"http://{a.ip}:37778/api/v1/node", timeout=3)
    a.cli("create", "hello", "--from", str(HELLO))  # the CLI found and trusted its node
    a.cli("share", "hello")
    set_password(a, "workspace-password", "set", "hello")  # (the CLI speaks TLS there too)
    wait_for(lambda: "hello" in shared_by(b, "alpha"), 5, "beta sees hello")
    (peer,) = [p for p in b.api("/peers").json()["peers"] if p["name"] == "alpha"]
    assert peer["url"] == a.url

    done = clone_with(b, "alpha/hello", PASSWORD)
    assert done["state"] == "installed", done["error"]
    assert str(done["peer_url"]).startswith("https://")

    # an impostor on gamma replays alpha's signed announcement with its own certificate:
    # the clone fails at the handshake, and the password never reaches it
    announcement = tmp_path / "announcement.bin"
    announcement.write_bytes(
        httpx.get(f"{a.url}/api/v1/node/announcement", verify=a.verify).content
    )
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
    a.start("alpha", "--tls")
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
