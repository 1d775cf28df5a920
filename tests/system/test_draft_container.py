"""Project folders with a Dockerfile or a devcontainer.json and no workspace.yaml,
drafted on one namespace node, shared (the image built from the folder and saved into
the workspace), then cloned by another node with the images gone from the engine: the
drafted container answers on its forwarded port (docs/workspace-format.md, "Drafted
from a project's files")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from tests.integration.conftest import shared_by, wait_for
from tests.lan import Host, Lan, admin_call
from tests.system.container_image import build_image

pytestmark = [pytest.mark.system]

HOSTS = 2
BASE = "busybox:1.36"  # made here from Debian's busybox-static, as a sharer would pull it
SERVE = 'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n'


@pytest.fixture(scope="module")
def nodes(lan: Lan, engine: str) -> Iterator[tuple[Host, Host]]:
    a, b = lan.hosts
    for host in (a, b):  # one engine, reached by both
        host.extra_env = {"AIENV_DOCKER_HOST": engine}
    a.start("alpha")
    b.start("beta")
    yield a, b
    for host in (a, b):
        host.stop()


def round_trip(a: Host, b: Host, engine: str, folder: Path, name: str) -> dict[str, object]:
    """Draft, share, drop the images, clone on b; b's running environment."""
    client = docker.DockerClient(base_url=engine, timeout=120)
    try:
        build_image(client, BASE)
        a.cli("create", name, "--from", str(folder), "--yes")
        manifest = yaml.safe_load((a.home / "workspaces" / name / "workspace.yaml").read_text())
        shared = a.cli("share", name, timeout=300)
        assert "images/image.tar" in shared.stdout, shared.stdout  # built from the folder
        image = manifest["environments"][0]["container"]["image"]
        for ref in (image, BASE):  # the clone loads what the workspace carries
            client.images.remove(ref, force=True)
    finally:
        client.close()
    wait_for(lambda: name in shared_by(b, "alpha"), 10.0, f"beta sees {name}")
    b.cli("clone", f"alpha/{name}", timeout=300)
    status, body = admin_call(b, "GET", "/environments")
    assert status == 200
    (env,) = [e for e in body["environments"] if e["workspace"] == name]  # type: ignore[index]
    assert env["state"] == "running", env
    return env  # type: ignore[no-any-return]


def test_a_dockerfile_project_is_drafted_built_carried_and_answers_on_a_peer(
    nodes: tuple[Host, Host], engine: str, tmp_path: Path
) -> None:
    a, b = nodes
    folder = tmp_path / "notes"
    (folder / "www").mkdir(parents=True)
    (folder / "www" / "index.html").write_text("<h1>drafted from a Dockerfile</h1>\n")
    (folder / "Dockerfile").write_text(f"FROM {BASE}\nCOPY www /www\nEXPOSE 8080\n{SERVE}")
    env = round_trip(a, b, engine, folder, "notes")
    url = env["endpoints"][0]["url"]  # type: ignore[index]
    assert "drafted from a Dockerfile" in b.run("curl", "-sf", url).stdout
    b.cli("stop", "notes")
    again = a.cli("share", "notes")  # the saved image inside its own context is no change
    assert "images/image.tar" not in again.stdout


def test_a_devcontainer_project_keeps_its_ports_env_and_host_requirements(
    nodes: tuple[Host, Host], engine: str, tmp_path: Path
) -> None:
    a, b = nodes
    folder = tmp_path / "devbox"
    dev = folder / ".devcontainer"
    (dev / "www" / "cgi-bin").mkdir(parents=True)
    (dev / "www" / "cgi-bin" / "mode").write_text(
        '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "mode=$MODE"\n'
    )
    (dev / "www" / "cgi-bin" / "mode").chmod(0o755)
    (dev / "Dockerfile").write_text(f"FROM {BASE}\nCOPY www /www\n{SERVE}")
    spec = {
        "build": {"dockerfile": "Dockerfile"},
        "forwardPorts": [8080],
        "containerEnv": {"MODE": "devcontainer"},
        "hostRequirements": {"memory": "64mb"},
    }
    (dev / "devcontainer.json").write_text("// made for the test\n" + json.dumps(spec))
    env = round_trip(a, b, engine, folder, "devbox")
    assert env["plan"]["memory"] >= 64 * 1024**2  # type: ignore[index, operator]
    url = env["endpoints"][0]["url"]  # type: ignore[index]
    assert b.run("curl", "-sf", f"{url}cgi-bin/mode").stdout.strip() == "mode=devcontainer"
    b.cli("stop", "devbox")
