"""The inventory's containers against a real Docker engine (a private dockerd): a
container the test starts with known ports, mounts and environment is listed with
them, its secrets masked, recognised as AI-related (its environment, and the model
file its process holds open), and the sampler sees it go down.

The image is made on the spot (tests/system/container_image.py): nothing is pulled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from aienv.state.db import Database
from aienv.state.store import StateStore
from aienv.system.containers import MASK
from aienv.system.sampler import Sampler
from tests.system.container_image import IMAGE, PORT, build_image

pytestmark = [pytest.mark.system]

HOSTS = 1

PUBLISHED = 28181
NAME = "aienv-inventory-llm"


@pytest.fixture
def container(engine: str, tmp_path: Path) -> Iterator[Any]:
    client = docker.DockerClient(base_url=engine, timeout=30)
    try:
        try:
            client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            build_image(client)
        models = tmp_path / "models"
        models.mkdir()
        (models / "tiny.gguf").write_bytes(b"GGUF" + bytes(60))
        started = client.containers.run(
            IMAGE,
            # the server holds the model open on fd 3, as an inference server would
            [
                "/bin/sh",
                "-c",
                f"exec 3</models/tiny.gguf; exec /bin/busybox httpd -f -p {PORT} -h /www",
            ],
            name=NAME,
            detach=True,
            ports={f"{PORT}/tcp": ("127.0.0.1", PUBLISHED)},
            volumes={str(models): {"bind": "/models", "mode": "ro"}},
            environment={"HF_TOKEN": "hf_very_secret", "MODEL_NAME": "tiny", "HF_HOME": "/models"},
        )
        yield started
    finally:
        for c in client.containers.list(all=True, filters={"name": NAME}):
            c.remove(force=True)
        client.close()


def test_container_is_listed_with_ports_mounts_masked_env_and_ai_reasons(
    engine: str, container: Any, tmp_path: Path
) -> None:
    sampler = Sampler(StateStore(Database(tmp_path / "state.sqlite3")), engine, 1)
    try:
        deadline = time.monotonic() + 10
        while True:
            data = sampler.full(tmp_path, {})
            (c,) = [x for x in data["containers"] if x["name"] == NAME]
            if any("runs AI process" in r for r in c["ai_reasons"]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert data["containers_reason"] == ""
        assert c["id"] == container.id[:12] and c["image"] == IMAGE and c["state"] == "running"
        assert {"container_port": PORT, "protocol": "tcp", "host_ip": "127.0.0.1",
                "host_port": PUBLISHED} in c["ports"]  # fmt: skip
        assert {"type": "bind", "source": str(tmp_path / "models"), "destination": "/models",
                "read_only": True} in c["mounts"]  # fmt: skip
        assert c["environment"]["HF_TOKEN"] == MASK and c["environment"]["MODEL_NAME"] == "tiny"
        assert "hf_very_secret" not in str(data)
        assert c["secrets"] == ["HF_TOKEN"]
        assert "environment sets HF_HOME, HF_TOKEN" in c["ai_reasons"]
        # the process inside, seen from the host, holds the model open: it marks the container
        assert any("runs AI process" in r and "/models/tiny.gguf" in r for r in c["ai_reasons"]), c[
            "ai_reasons"
        ]
        assert any(w["kind"] == "container" and w["name"] == NAME for w in data["ai_workloads"])
        # the sampler sees it go down
        sampler.record(*sampler.sample())
        container.stop(timeout=1)
        _, found = sampler.sample()
        downs = [x for x in found if x["kind"] == "container" and x["name"] == NAME]
        assert [(x["action"], x["state"]) for x in downs] == [("down", "exited")]
    finally:
        sampler.close()
