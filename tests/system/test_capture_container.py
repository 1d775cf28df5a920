"""Capture of a running container on one namespace node, shared, cloned by another
and launched there against a real Docker engine: the twin answers the same
requests with the same bodies.

The container runs the image made on the spot by ``container_image`` (nothing
is pulled) with a command of its own, a published port, a secret and an
ordinary variable, a small bind-mounted folder (copied into the workspace) and
a larger one (over the copy limit: mounted empty and listed). The image is
removed from the engine before the clone, so the twin runs from the image the
capture saved into the workspace. A process of that container is refused as a
process (its paths are the container's), pointing to ``--container``. A tag a
capture put on an image comes off again, and never takes the image with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from docker.types import Mount

from aienv.dockerengine.images import tag_image, untag_image
from tests.integration.conftest import no_leftovers, shared_by, wait_for
from tests.lan import Host, Lan, admin_call
from tests.system.container_image import DATA, IMAGE, PAGE, build_image

pytestmark = [pytest.mark.system]

HOSTS = 2

SECRET = "hf_capture-secret-0b7d"
PUBLISHED = 18080
NAME = "llm-web"
COMMAND = ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]


@pytest.fixture(scope="module")
def nodes(lan: Lan, engine: str) -> tuple[Host, Host]:
    a, b = lan.hosts
    for host in (a, b):
        host.extra_env = {"AIENV_DOCKER_HOST": engine}
    a.start("alpha")
    b.start("beta")
    return a, b


@pytest.fixture
def client(engine: str) -> Iterator[Any]:
    c = docker.DockerClient(base_url=engine, timeout=60)
    try:
        yield c
    finally:
        c.close()


def fetch(host: Host, url: str) -> str | None:
    res = host.run("curl", "-sf", "--max-time", "2", url)
    return res.stdout if res.returncode == 0 else None


def test_container_capture_round_trips_to_a_twin_on_a_peer(
    nodes: tuple[Host, Host], client: Any, tmp_path: Path
) -> None:
    a, b = nodes
    build_image(client)
    data, big = tmp_path / "data", tmp_path / "big"
    data.mkdir()
    big.mkdir()
    (data / "hello.txt").write_text(DATA)
    (big / "weights.bin").write_bytes(b"\0" * 64 * 1024)
    original = client.containers.run(
        IMAGE,
        COMMAND,
        name=NAME,
        detach=True,
        environment={"GREETING": "hi", "HF_TOKEN": SECRET},
        ports={"8080/tcp": PUBLISHED},
        mounts=[
            Mount("/data", str(data), type="bind", read_only=True),
            Mount("/big", str(big), type="bind"),
        ],
    )
    try:
        base = f"http://127.0.0.1:{PUBLISHED}/"
        wait_for(lambda: fetch(b, base) == PAGE, 20, "the original container answers")
        assert fetch(b, base + "data/hello.txt") == DATA

        started = time.monotonic()
        res = a.cli("capture", "--container", NAME, "--as", "boxed", "--copy-limit", "16KiB",
                    "--json", timeout=300)  # fmt: skip
        report = json.loads(res.stdout)
        assert report["secrets"] == ["HF_TOKEN"]
        assert [n["path"] for n in report["not_copied"]] == [str(big)]
        folder = a.home / "workspaces" / "boxed"
        (env,) = yaml.safe_load((folder / "workspace.yaml").read_text())["environments"]
        block = env["container"]
        assert block["image"] == IMAGE and block["image_archive"] == "images/boxed.tar"
        assert block["command"] == COMMAND
        assert block["env"] == {"GREETING": "hi"}
        assert block["mounts"] == [  # in the order of their targets
            {"source": "mounts/big", "target": "/big", "read_only": False},
            {"source": "mounts/data", "target": "/data", "read_only": True},
        ]
        assert env["endpoints"] == [{"name": "http", "port": 8080, "protocol": "http"}]
        assert (folder / "mounts" / "data" / "hello.txt").read_text() == DATA
        assert list((folder / "mounts" / "big").iterdir()) == []  # declared, not copied
        assert (folder / "images" / "boxed.tar").stat().st_size > 100_000
        assert "HF_TOKEN" in (folder / "CAPTURE.md").read_text()
        for path in folder.rglob("*"):
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
        no_leftovers(a)
        pid = client.api.inspect_container(NAME)["State"]["Pid"]  # httpd, seen from the host
        inside = a.cli("capture", "--process", str(pid), "--as", "inside", check=False)
        said = " ".join(inside.stderr.split())
        assert inside.returncode != 0 and "Traceback" not in said
        assert f"runs inside container {original.id[:12]}" in said
        assert f"aienv capture --container {original.id[:12]}" in said
        assert not (a.home / "workspaces" / "inside").exists()

        shared = a.cli("share", "boxed")
        assert "added" not in shared.stdout  # the capture saved the image already
        wait_for(lambda: "boxed" in shared_by(b, "alpha"), 5, "beta sees alpha/boxed")
        client.images.remove(IMAGE, force=True)  # the twin must load it from the workspace
        cloned = b.cli("clone", "alpha/boxed", timeout=300)
        assert "running" in cloned.stdout, cloned.stdout + cloned.stderr
        _, envs = admin_call(b, "GET", "/environments")
        (twin,) = envs["environments"]  # type: ignore[index]
        url = twin["endpoints"][0]["url"]
        wait_for(lambda: fetch(b, url) is not None, 20, "the twin answers")
        assert fetch(b, url) == fetch(b, base) == PAGE
        assert fetch(b, url + "data/hello.txt") == fetch(b, base + "data/hello.txt") == DATA
        inspect = client.api.inspect_container(twin["handle"]["container"])
        assert "HF_TOKEN=" + SECRET not in inspect["Config"]["Env"]
        assert "GREETING=hi" in inspect["Config"]["Env"]
        print(f"container capture, share, clone and answer: {time.monotonic() - started:.2f} s")
        b.cli("stop", "boxed")
    finally:
        original.remove(force=True)


def test_capture_of_a_missing_container_fails_cleanly(nodes: tuple[Host, Host]) -> None:
    a, _ = nodes
    res = a.cli("capture", "--container", "no-such-box", check=False)
    assert res.returncode == 4 and "no container 'no-such-box'" in res.stderr
    assert "Traceback" not in res.stderr
    status, body = admin_call(a, "POST", "/capture", {"container": "no-such-box"})
    assert status == 404 and body["error"]["code"] == "container_not_found"  # type: ignore[index]
    assert not (a.home / "workspaces" / "no-such-box").exists()
    no_leftovers(a)


def test_a_tag_put_on_for_a_capture_comes_off_without_the_image(engine: str, client: Any) -> None:
    """After a failed capture: the tag goes when the image has another name, or when a
    running container uses it (the engine deletes no such image); when it is the only
    name of an image that only a stopped container uses, removing it could delete the
    image, so it stays, and that is said."""
    image = build_image(client)
    box = client.containers.run(IMAGE, COMMAND, name="untag-box", detach=True)
    try:
        tag_image(engine, image, "captured/box:1")
        assert untag_image(engine, "captured/box:1", box.id) == ""  # IMAGE names it too
        assert client.images.get(image).tags == [IMAGE]
        tag_image(engine, image, "captured/box:2")
        client.images.remove(IMAGE)  # now the capture's tag is its only name
        assert untag_image(engine, "captured/box:2", box.id) == ""  # it runs: image kept
        assert client.images.get(image).tags == []
        tag_image(engine, image, "captured/box:3")
        box.stop(timeout=1)
        kept = untag_image(engine, "captured/box:3", box.id)
        assert kept.startswith("the engine keeps the tag captured/box:3: it is the image's only")
        assert client.images.get(image).tags == ["captured/box:3"]
    finally:
        box.remove(force=True)
        client.api.tag(image, *IMAGE.rsplit(":", 1))
        for tag in client.images.get(image).tags:
            if tag.startswith("captured/"):
                client.images.remove(tag)
