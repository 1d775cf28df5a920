"""A tiny web-server image made on the spot (no registry), and a workspace that runs it.

The image is ``/bin/busybox`` (Debian's busybox-static: one static binary) and
a ``/www`` folder with a page, imported as a single layer (``docker import``):

    /bin/busybox  /bin/sh -> busybox  /www/index.html  /www/data -> /data  /tmp

Its default command serves ``/www`` on port 8080. ``/www/data`` points at
``/data``, where the workspace mounts its ``data`` folder, so the server shows
the workspace's files too.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import yaml

BUSYBOX = Path("/bin/busybox")
IMAGE = "aienv-test/www:1"
PAGE = "<h1>aienv container test</h1>\n"
DATA = "data from the workspace\n"
PORT = 8080  # the container port


def _rootfs() -> bytes:
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing: install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
            tar.addfile(info, io.BytesIO(data) if data else None)

        for folder in ("bin", "www", "tmp", "data"):
            add(folder, tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, BUSYBOX.read_bytes())
        add("bin/sh", tarfile.SYMTYPE, 0o777, link="busybox")
        add("www/index.html", tarfile.REGTYPE, 0o644, PAGE.encode())
        add("www/data", tarfile.SYMTYPE, 0o777, link="/data")
    return buf.getvalue()


def build_image(client: Any, image: str = IMAGE) -> str:
    """Import the image into the engine behind ``client``; return its id."""
    repository, tag = image.rsplit(":", 1)
    client.api.import_image_from_data(
        _rootfs(),
        repository=repository,
        tag=tag,
        changes=[
            f'CMD ["/bin/busybox", "httpd", "-f", "-p", "{PORT}", "-h", "/www"]',
            "WORKDIR /www",
        ],
    )
    return str(client.images.get(image).id)


def write_workspace(
    root: Path,
    *,
    image: str = IMAGE,
    archive: str | None = "images/www.tar",
    command: list[str] | None = None,
    name: str = "web",
) -> Path:
    """A workspace with one container environment serving the image's page on port 8080.

    ``command`` defaults to a shell that prints its settings, then runs the server
    on ``{port.http}``.
    """
    if command is None:
        command = [
            "/bin/sh",
            "-c",
            "echo started greeting=$GREETING port=$AIENV_PORT_HTTP ws=$AIENV_WORKSPACE; "
            "exec /bin/busybox httpd -f -v -p {port.http} -h /www",
        ]
    container: dict[str, Any] = {
        "image": image,
        "command": command,
        "env": {"GREETING": "hello"},
        "mounts": [{"source": "data", "target": "/data", "read_only": True}],
    }
    if archive is not None:
        container["image_archive"] = archive
    manifest = {
        "apiVersion": "aienv/v1",
        "name": name,
        "description": "a web server in a container",
        "data": [{"name": "data", "path": "data"}],
        "environments": [
            {
                "name": "www",
                "runtime": "container",
                "requires": {"cpus": 0.5, "memory": "32MiB"},
                "recommends": {"cpus": 1, "memory": "64MiB"},
                "endpoints": [{"name": "http", "port": PORT}],
                "container": container,
            }
        ],
    }
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "hello.txt").write_text(DATA)
    (root / "images").mkdir(exist_ok=True)
    (root / "workspace.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root
