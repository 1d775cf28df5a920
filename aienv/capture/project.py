"""A workspace drafted from a project folder's own files, for a folder without a
``workspace.yaml`` (``aienv create NAME --from DIR``).

What is found, in this order, each giving one environment (the first is the one a
clone launches):

- ``.devcontainer/devcontainer.json`` (or ``.devcontainer.json``): a container from
  its ``image`` or its ``build.dockerfile``, its ``forwardPorts`` as endpoints, its
  ``containerEnv``, and its ``hostRequirements`` as ``requires``;
- a ``Dockerfile``: a container built from the folder when it is shared, its
  ``EXPOSE``d ports as endpoints;
- notebooks (``*.ipynb``): JupyterLab (venv runtime) on the folder, with the
  project's Python requirements and ``jupyterlab``, opened logged in;
- a Python project (``requirements.txt``, ``pyproject.toml``'s ``[project]
  dependencies`` or a conda ``environment.yml``, its pip part and the conda packages
  pip has; conda is not used): a venv environment running ``app.py``, ``main.py``,
  ``server.py`` or ``manage.py``, started the way its framework wants (Streamlit,
  Gradio, FastAPI/uvicorn, Flask, Django) on the port the node gives (also in
  ``PORT``);
- a ``package.json``: ``npm start`` (or ``node`` on its ``main``), with ``PORT``.

What it could not decide is listed for the person (``DRAFT.md`` in the workspace),
as a capture's ``CAPTURE.md`` is. The rules are documented in
docs/workspace-format.md ("Drafted from a project's files").
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aienv.capture.draft import Draft, default_name, endpoint_names
from aienv.capture.project_python import (
    DEFAULT_PORT,
    Found,
    jupyterlab,
    notebooks_in,
    python_app,
    python_requirements,
)
from aienv.errors import WorkspaceError
from aienv.units import parse_size

NOTES = "DRAFT.md"
DEVCONTAINERS = (".devcontainer/devcontainer.json", ".devcontainer.json")
KNOWN = ", ".join(
    ("requirements.txt", "pyproject.toml", "environment.yml", "a Dockerfile", "devcontainer.json",
     "package.json or notebooks")
)  # fmt: skip


def draft_project(folder: Path, name: str, host: str) -> Draft:
    """The draft for ``folder`` (blocks: reads files); WorkspaceError when nothing in it
    says how it runs."""
    if not folder.is_dir():
        raise WorkspaceError(f"{folder} is not a folder")
    found = Found(folder)
    container_drafted = _devcontainer(found) or _dockerfile(found)
    requirements = python_requirements(found)
    notebooks = sorted(p.relative_to(folder).as_posix() for p in notebooks_in(folder))
    if notebooks:
        jupyterlab(found, requirements, notebooks)
    if requirements is not None:
        python_app(found, requirements)
    _node_app(found)
    if not found.environments:
        raise WorkspaceError(
            f"{folder} has no workspace.yaml and nothing aienv knows how to run ({KNOWN}): "
            "write a workspace.yaml (docs/workspace-format.md)",
            code="nothing_to_draft",
        )
    if container_drafted and len(found.environments) > 1:
        found.todo.append(
            "several environments were drafted: the first one is what a clone launches"
        )
    manifest: dict[str, Any] = {
        "apiVersion": "aienv/v1",
        "name": name,
        "version": "0.1.0",
        "description": _description(folder) or f"Drafted from the files of {folder.name}",
        "languages": found.languages,
        "tools": found.tools,
        "projects": [{"name": "project", "path": ".", "description": f"The folder {folder}"}],
        "environments": found.environments,
    }
    if found.setup:
        manifest["setup"] = found.setup
    draft = Draft(
        name=name, manifest=manifest, origin={"kind": "draft", "path": str(folder), "host": host}
    )
    draft.files = {**found.files, NOTES: _notes(found)}
    draft.captured = found.found
    draft.notes = found.todo
    return draft


# -- containers ----------------------------------------------------------------------


def _jsonc(text: str) -> Any:
    """JSON with comments and trailing commas, as devcontainer.json allows."""
    text = re.sub(
        r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', lambda m: m.group(1) or "", text, flags=re.S
    )
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", text))


def _devcontainer(found: Found) -> bool:
    path = next((found.folder / p for p in DEVCONTAINERS if (found.folder / p).is_file()), None)
    if path is None:
        return False
    rel = path.relative_to(found.folder).as_posix()
    try:
        spec = _jsonc(path.read_text())
    except ValueError as exc:
        found.todo.append(f"{rel} is not valid JSON ({exc}); it was not used")
        return False
    if not isinstance(spec, dict):
        found.todo.append(f"{rel} is not a JSON object; it was not used")
        return False
    env_spec = spec.get("containerEnv")
    container: dict[str, Any] = {
        "env": {str(k): str(v) for k, v in env_spec.items()} if isinstance(env_spec, dict) else {}
    }
    build = spec.get("build") or (
        {"dockerfile": spec["dockerFile"]} if "dockerFile" in spec else None
    )
    if isinstance(build, dict) and build.get("dockerfile"):
        base = path.parent
        context = (base / build.get("context", ".")).resolve()
        dockerfile = (base / build["dockerfile"]).resolve()
        if not context.is_relative_to(found.folder.resolve()) or not dockerfile.is_file():
            found.todo.append(
                f"{rel}: its build's Dockerfile or context is outside the folder or missing"
            )
            return False
        container["build"] = context.relative_to(found.folder.resolve()).as_posix() or "."
        if dockerfile.parent != context or dockerfile.name != "Dockerfile":
            found.todo.append(f"{rel}: the Dockerfile is built as {context.name}/Dockerfile; check")
        container["image"] = _image_name(found)
        container["image_archive"] = "images/image.tar"
        _ignore_images(found)
    elif isinstance(spec.get("image"), str):
        container["image"] = spec["image"]
        found.todo.append(
            f"the image {spec['image']} must be in the Docker engine of the node that shares it"
        )
    else:
        found.todo.append(f"{rel} names neither an image nor a Dockerfile; it was not used")
        return False
    ports = [p for p in spec.get("forwardPorts") or [] if isinstance(p, int)]
    env = {
        "name": "dev",
        "runtime": "container",
        "description": f"The dev container of {rel}",
        "requires": _host_requirements(spec.get("hostRequirements") or {}, found),
        "container": {k: v for k, v in container.items() if v},
        "endpoints": endpoint_names([(p, "http") for p in ports]),
    }
    found.add(env, tool="devcontainer")
    found.found.append(f"{rel}: a container ({'built' if 'build' in container else 'image'}), "
                       f"{len(ports)} forwarded port(s)")  # fmt: skip
    if spec.get("postCreateCommand") or spec.get("features"):
        found.todo.append(
            f"{rel}: its postCreateCommand and features are not run; add them to the Dockerfile"
        )
    return True


def _image_name(found: Found) -> str:
    """The image a share builds, named after the folder (the image name rule)."""
    return f"aienv-draft/{default_name(found.folder.name)}:latest"


def _ignore_images(found: Found) -> None:
    """The saved image (``images/``) kept out of the next build's context."""
    path = found.folder / ".dockerignore"
    text = path.read_text(errors="replace") if path.is_file() else ""
    if "images/" not in text.split():
        found.files[".dockerignore"] = text + ("" if not text or text.endswith("\n") else "\n")
        found.files[".dockerignore"] += (
            "# the image aienv saves when the workspace is shared\nimages/\n"
        )


def _host_requirements(spec: dict[str, Any], found: Found) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(spec.get("cpus"), int | float):
        out["cpus"] = spec["cpus"]
    for key in ("memory", "storage"):
        if isinstance(spec.get(key), str):
            try:
                size = _devcontainer_size(spec[key])
            except ValueError:
                found.todo.append(f"hostRequirements.{key} {spec[key]!r} is not a size; left out")
                continue
            out["memory" if key == "memory" else "disk"] = f"{max(1, size // 2**20)}MiB"
    if spec.get("gpu") in (True, "true"):
        out["gpu"] = "required"
    elif spec.get("gpu") == "optional":
        out["gpu"] = "optional"
    return out


def _devcontainer_size(text: str) -> int:
    """``8gb``, as devcontainer.json writes sizes (binary units, as the machines they
    pick), else any size aienv reads."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt])b", text.strip().lower())
    if match:
        return int(float(match[1]) * 1024 ** ("kmgt".index(match[2]) + 1))
    return parse_size(text)


def _dockerfile(found: Found) -> bool:
    path = found.folder / "Dockerfile"
    if not path.is_file():
        return False
    ports = []
    for line in path.read_text(errors="replace").splitlines():
        words = line.split()
        if words and words[0].upper() == "EXPOSE":
            ports += [int(w.split("/")[0]) for w in words[1:] if w.split("/")[0].isdigit()]
    env = {
        "name": "app",
        "runtime": "container",
        "description": "Built from the folder's Dockerfile when the workspace is shared",
        "container": {
            "image": _image_name(found),
            "build": ".",
            "image_archive": "images/image.tar",
        },
        "endpoints": endpoint_names([(p, "http") for p in ports]),
    }
    found.add(env, tool="docker")
    _ignore_images(found)
    found.found.append(
        f"Dockerfile: a container built from the folder, port(s) {ports or 'none'} exposed"
    )
    if not ports:
        found.todo.append("the Dockerfile exposes no port: add the tool's endpoints by hand")
    return True


# -- Node.js -----------------------------------------------------------------------------


def _node_app(found: Found) -> None:
    path = found.folder / "package.json"
    if not path.is_file():
        return
    try:
        spec = json.loads(path.read_text())
    except ValueError as exc:
        found.todo.append(f"package.json is not valid JSON ({exc}); it was not used")
        return
    if not isinstance(spec, dict):
        found.todo.append("package.json is not a JSON object; it was not used")
        return
    scripts = spec.get("scripts")
    if isinstance(scripts, dict) and "start" in scripts:
        command = ["env", "PORT={port.http}", "npm", "start"]
    elif isinstance(spec.get("main"), str):
        command = ["env", "PORT={port.http}", "node", spec["main"]]
    else:
        found.todo.append("package.json has no start script and no main: give the command")
        return
    found.add({
        "name": "web" if found.environments else "app",
        "runtime": "process",
        "description": f"The Node.js app: {' '.join(command[2:])}",
        "endpoints": [{"name": "http", "port": DEFAULT_PORT["node"], "path": "/"}],
        "process": {"command": command},
    }, language="javascript", tool="http")  # fmt: skip
    found.found.append(f"package.json: {' '.join(command[2:])}")
    needs = [k for k in ("dependencies", "devDependencies") if spec.get(k)]
    if needs:
        _node_modules(found, needs)
    found.todo.append("node and npm must be installed on the node that runs it")


def _node_modules(found: Found, needs: list[str]) -> None:
    """A setup step that installs the app's packages on the node that clones it, unless
    the workspace carries its ``node_modules`` already."""
    locked = (found.folder / "package-lock.json").is_file()
    install = "npm ci" if locked else "npm install"
    found.setup.append({
        "name": "node-modules",
        "run": f"test -d node_modules || {install} --no-audit --no-fund",
    })  # fmt: skip
    found.found.append(f"package.json {' and '.join(needs)}: a setup step runs {install}")
    carried = (found.folder / "node_modules").is_dir()
    found.todo.append(
        "node_modules is carried as it is, so the setup step does nothing where it arrives"
        if carried
        else f"{install} needs the npm registry on the node that clones it (or dependencies "
        "given as file: paths in the folder); to carry them to a LAN without internet, run "
        f"{install} here before sharing"
    )


# -- the person's notes ----------------------------------------------------------------


def _description(folder: Path) -> str:
    """The first paragraph of the folder's README, as the workspace's description."""
    for name in ("README.md", "README.rst", "README.txt", "README"):
        path = folder / name
        if path.is_file():
            for block in path.read_text(errors="replace").split("\n\n"):
                text = " ".join(
                    ln.strip()
                    for ln in block.splitlines()
                    if not ln.startswith(("#", "=", "-", "!", "["))
                )
                if len(text) > 20:
                    return text[:400]
    return ""


def _notes(found: Found) -> str:
    lines = [f"# Drafted from the files of {found.folder}", "", "## What was found", ""]
    lines += [f"- {line}" for line in found.found]
    if found.todo:
        lines += ["", "## To check", "", *[f"- {line}" for line in found.todo]]
    return "\n".join(lines) + "\n"
