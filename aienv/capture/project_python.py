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
LAB_REQUIREMENTS = "requirements-lab.txt"
LAB_COMMAND = ["jupyter-lab", "--no-browser", "--ip=0.0.0.0", "--port={port.lab}"]
DEFAULT_PORT = {"python": 8000, "node": 3000, "container": 8080}
#: what a requirement's name says about how its app starts (first match wins)
FRAMEWORKS = ("streamlit", "gradio", "fastapi", "uvicorn", "flask", "django")


class Found:
    """What the draft gathers: environments, generated files and lines for the person."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.environments: list[dict[str, Any]] = []
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
        try:
            project = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
        except tomllib.TOMLDecodeError as exc:
            found.todo.append(f"pyproject.toml is not valid TOML ({exc}); it was not used")
            return None
        deps = [d for d in project.get("dependencies", []) if isinstance(d, str)]
        found.found.append(f"pyproject.toml: {len(deps)} dependencies")
        return deps
    if (folder / "environment.yml").is_file():
        return _conda(found, folder / "environment.yml")
    return None


def _requirement_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _conda(found: Found, path: Path) -> list[str] | None:
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        found.todo.append(f"environment.yml is not valid YAML ({exc}); it was not used")
        return None
    pip: list[str] = []
    conda: list[str] = []
    for dep in spec.get("dependencies") or []:
        if isinstance(dep, dict):
            pip += [d for d in dep.get("pip") or [] if isinstance(d, str)]
        elif isinstance(dep, str) and not re.match(r"^(python|pip)\b", dep):
            conda.append(re.sub(r"=+", "==", dep.split("::")[-1], count=1))
    found.found.append(f"environment.yml: {len(pip)} pip and {len(conda)} conda package(s), "
                       "all installed by pip")  # fmt: skip
    if conda:
        found.todo.append("conda packages are installed by pip under the same names "
                          f"({', '.join(conda)}): check each has a wheel")  # fmt: skip
    return pip + conda


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
            found.todo.append("no entry point found (app.py, main.py, server.py, manage.py or "
                              "[project.scripts]): give the environment its command")  # fmt: skip
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
