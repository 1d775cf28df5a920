"""The Python part of a project's draft (``project.py``): its requirements (from
``requirements.txt``, ``pyproject.toml`` or ``environment.yml``), JupyterLab for its
notebooks, and its app started the way its framework wants."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ENTRY_FILES = ("app.py", "main.py", "server.py", "manage.py")
CONDA_FILES = ("environment.yml", "environment.yaml")
LAB_REQUIREMENTS = "requirements-lab.txt"
LAB_COMMAND = ["jupyter-lab", "--no-browser", "--ip=0.0.0.0", "--port={port.lab}"]
DEFAULT_PORT = {"python": 8000, "node": 3000, "container": 8080}
#: what a requirement's name says about how its app starts (first match wins)
FRAMEWORKS = ("streamlit", "gradio", "fastapi", "uvicorn", "flask", "django")
#: conda packages pip has no wheel of (the interpreter, compilers, CUDA, system
#: libraries), and name prefixes of such (R's packages, conda's metapackages)
NOT_PIP = frozenset((
    "python", "pip", "cudatoolkit", "cudnn", "cuda", "cuda-toolkit", "cuda-nvcc", "cuda-version",
    "nccl", "pytorch-cuda", "cpuonly", "mkl", "mkl-service", "blas", "libblas", "openblas",
    "libgcc", "libgcc-ng", "libstdcxx-ng", "libgfortran", "gcc", "gxx", "gfortran", "compilers",
    "c-compiler", "cxx-compiler", "make", "nodejs", "r-base", "openssl", "ca-certificates",
    "zlib", "libffi", "sqlite", "tk", "xz", "ffmpeg", "git", "graphviz",
))  # fmt: skip
NOT_PIP_PREFIXES = ("r-", "_")
#: conda packages whose PyPI name differs
PYPI_NAMES = {
    "pytorch": "torch", "py-opencv": "opencv-python", "matplotlib-base": "matplotlib",
    "pytables": "tables", "msgpack-python": "msgpack", "python-graphviz": "graphviz",
}  # fmt: skip


class Found:
    """What the draft gathers: environments, generated files and lines for the person."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.environments: list[dict[str, Any]] = []
        self.setup: list[dict[str, Any]] = []  # steps a clone runs before its first launch
        self.files: dict[str, str] = {}
        self.found: list[str] = []  # "requirements.txt: 3 requirements → a venv environment"
        self.todo: list[str] = []  # what the person still has to check or fill in
        self.languages: list[str] = []
        self.tools: list[str] = []

    def add(
        self, env: dict[str, Any], language: str | None = None, tool: str | None = None
    ) -> None:
        names = {e["name"] for e in self.environments}
        if env["name"] in names:
            env["name"] = f"{env['name']}-{len(self.environments) + 1}"
        self.environments.append(env)
        for value, into in ((language, self.languages), (tool, self.tools)):
            if value and value not in into:
                into.append(value)


def python_requirements(found: Found) -> list[str] | None:
    """The project's requirements as lines pip reads, and where they came from; None when
    it is not a Python project."""
    folder = found.folder
    if (folder / "requirements.txt").is_file():
        lines = _requirement_lines((folder / "requirements.txt").read_text(errors="replace"))
        found.found.append(f"requirements.txt: {len(lines)} requirement(s)")
        return lines
    if (folder / "pyproject.toml").is_file():
        return _pyproject(found, folder / "pyproject.toml")
    conda = next((folder / n for n in CONDA_FILES if (folder / n).is_file()), None)
    return None if conda is None else _conda(found, conda)


def _pyproject(found: Found, path: Path) -> list[str] | None:
    """``[project] dependencies``, as pip reads them (the project itself is not installed:
    its app is run from its files)."""
    try:
        spec = tomllib.loads(path.read_text(errors="replace"))
    except tomllib.TOMLDecodeError as exc:
        found.todo.append(f"pyproject.toml is not valid TOML ({exc}); it was not used")
        return None
    project = spec.get("project")
    listed = project.get("dependencies") if isinstance(project, dict) else None
    deps = [d for d in listed if isinstance(d, str)] if isinstance(listed, list) else []
    found.found.append(f"pyproject.toml: {len(deps)} dependency(ies)")
    tool = spec.get("tool")
    if not deps and isinstance(tool, dict) and isinstance(tool.get("poetry"), dict):
        found.todo.append("pyproject.toml's dependencies are Poetry's ([tool.poetry]), which "
                          "the draft does not read: list them in a requirements.txt")  # fmt: skip
    return deps


def _requirement_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _conda(found: Found, path: Path) -> list[str] | None:
    """The pip packages of a conda ``environment.yml``, then its conda packages that pip
    installs under their own (or their PyPI) name; conda itself is not used, so the
    conda-only ones (compilers, CUDA, system libraries, R) are left for the person."""
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        found.todo.append(f"{path.name} is not valid YAML ({exc}); it was not used")
        return None
    deps = spec.get("dependencies") if isinstance(spec, dict) else None
    pip: list[str] = []
    conda: list[str] = []
    left: list[str] = []
    for dep in deps if isinstance(deps, list) else []:
        if isinstance(dep, dict):
            pip += [d for d in dep.get("pip") or [] if isinstance(d, str)]
        elif isinstance(dep, str):
            name, requirement = conda_requirement(dep)
            if name == "python" and requirement != name:
                asked = dep.rsplit("::", maxsplit=1)[-1]
                found.todo.append(f"{path.name} asks for {asked}: the venv is made with the "
                                  "node's Python (options.python chooses another)")  # fmt: skip
            if name in NOT_PIP or name.startswith(NOT_PIP_PREFIXES):
                left += [] if name in ("python", "pip") else [dep]
            else:
                conda.append(requirement)
    found.found.append(f"{path.name}: {len(pip)} pip and {len(conda)} conda package(s) "
                       "installed by pip in a venv (conda is not used)")  # fmt: skip
    if conda:
        found.todo.append("conda packages are installed by pip under their PyPI names "
                          f"({', '.join(conda)}): check each has a wheel")  # fmt: skip
    if left:
        found.todo.append(f"conda-only packages are not installed ({', '.join(left)}): the "
                          "node must have them, or the environment needs a container")  # fmt: skip
    return pip + conda


def conda_requirement(dep: str) -> tuple[str, str]:
    """A conda match spec (``conda-forge::numpy=1.26=py311_0``, ``numpy 1.26.*``,
    ``numpy>=1.20``) as its name and the requirement pip reads (``numpy==1.26.*``: conda's
    ``=`` matches a version prefix, its ``==`` one version; a build is dropped)."""
    spec = dep.rsplit("::", maxsplit=1)[-1].split("[", maxsplit=1)[0].strip()
    match = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec)
    if match is None:
        return spec.lower(), spec
    name = match[1].lower()
    pip_name = PYPI_NAMES.get(name, name)
    rest = match[2].strip()
    if not rest:
        return name, pip_name
    if rest[0] in "<>!~":
        return name, pip_name + "".join(rest.split())
    exact = rest.startswith("==")
    version = re.split(r"[=\s]", rest.lstrip("="), maxsplit=1)[0]
    if exact or version.endswith("*"):
        return name, f"{pip_name}=={version}"
    return name, f"{pip_name}=={version}.*"


def notebooks_in(folder: Path) -> list[Path]:
    out = [p for p in folder.glob("*.ipynb")] + [p for p in folder.glob("*/*.ipynb")]
    return [p for p in out if ".ipynb_checkpoints" not in p.parts]


def _requirements_file(found: Found, requirements: list[str], extra: list[str], name: str) -> str:
    """The requirements file a venv environment installs: the project's own when it is
    enough, else one written beside it with the project's and ``extra``."""
    if not extra and (found.folder / "requirements.txt").is_file():
        return "requirements.txt"
    lines = ["# written by aienv's draft: the project's requirements and what the tool needs"]
    found.files[name] = "\n".join([*lines, *requirements, *extra]) + "\n"
    return name


def jupyterlab(found: Found, requirements: list[str] | None, notebooks: list[str]) -> None:
    names = {_name(r) for r in requirements or []}
    extra = [] if "jupyterlab" in names else ["jupyterlab>=4"]
    req = _requirements_file(found, requirements or [], extra, LAB_REQUIREMENTS)
    found.add({
        "name": "lab",
        "runtime": "venv",
        "description": f"JupyterLab on the project's {len(notebooks)} notebook(s)",
        "endpoints": [{"name": "lab", "port": 8888, "path": "/lab",
                       "auth": {"token": "JUPYTER_TOKEN", "query": "token"}}],
        "options": {"requirements": req, "command": LAB_COMMAND},
    }, language="python", tool="jupyterlab")  # fmt: skip
    shown = ", ".join(notebooks[:3]) + ("…" if len(notebooks) > 3 else "")
    found.found.append(f"notebooks ({shown}): JupyterLab, opened logged in")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def python_app(found: Found, requirements: list[str]) -> None:
    command = _python_command(found, {_name(r) for r in requirements})
    if command is None:
        if not any(e["runtime"] == "venv" for e in found.environments):
            found.todo.append("no entry point found (app.py, main.py, server.py or "
                              "manage.py): give the environment its command")  # fmt: skip
        return
    req = _requirements_file(found, requirements, [], "requirements-aienv.txt")
    found.add({
        "name": "app",
        "runtime": "venv",
        "description": f"The project's app: {' '.join(command)}",
        "endpoints": [{"name": "http", "port": DEFAULT_PORT["python"], "path": "/"}],
        "options": {"requirements": req, "command": command},
    }, language="python", tool="http")  # fmt: skip
    found.found.append(f"a Python app: {' '.join(command)}")
    if command[0] == "env":
        found.todo.append("the app is expected to listen on the port in PORT; check it does")


def _python_command(found: Found, names: set[str]) -> list[str] | None:
    """How the project's app starts, on the port the node gives, by its framework."""
    entry = next((f for f in ENTRY_FILES if (found.folder / f).is_file()), None)
    if entry is None:
        return None
    module = entry.removesuffix(".py")
    framework = next((f for f in FRAMEWORKS if f in names), None)
    port = "{port.http}"
    if framework == "streamlit":
        return ["streamlit", "run", entry, f"--server.port={port}", "--server.address=0.0.0.0",
                "--server.headless=true"]  # fmt: skip
    if framework == "gradio":
        return ["env", "GRADIO_SERVER_NAME=0.0.0.0", f"GRADIO_SERVER_PORT={port}", "python", entry]
    if framework in ("fastapi", "uvicorn") and entry != "manage.py":
        if "uvicorn" not in names:
            found.todo.append("FastAPI needs a server: add uvicorn to the requirements")
        return ["uvicorn", f"{module}:app", "--host=0.0.0.0", f"--port={port}"]
    if framework == "flask" and entry != "manage.py":
        return ["flask", "--app", module, "run", "--host=0.0.0.0", f"--port={port}"]
    if framework == "django" and entry == "manage.py":
        return ["python", "manage.py", "runserver", f"0.0.0.0:{port}"]
    return ["env", f"PORT={port}", "python", entry]
