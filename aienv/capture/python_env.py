"""What a captured Python program needs, and the environment it ran in.

- Its **roots**: the top-level modules its own files import (read with ``ast``,
  never run; for a Jupyter server, its notebooks' code cells too), the module it
  runs (``-m``), the compiled modules it has loaded (its memory maps), and the
  console script it was started as (``jupyter-lab``). The
  interpreter maps them to distributions, and those to their dependencies
  (``read_python.imported_packages``): the twin's ``requirements.txt`` holds
  those, not every package the interpreter has.
- Its **environment**: a virtualenv (``pyvenv.cfg``) or a conda environment
  (``conda-meta/``) becomes a ``runtime: venv`` environment built from
  ``requirements.txt``, whose wheels ``aienv share`` carries, and a command that
  pointed into it (``/venv/bin/jupyter-lab``) names the script instead.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

from aienv.capture.filter import SKIP_DIRS
from aienv.capture.read_process import PYTHON

MAX_FILES = 2000
MAX_BYTES = 1024 * 1024
MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024  # a notebook holds its outputs (images) too


def env_prefix(python: str) -> Path | None:
    """The virtualenv or conda environment the interpreter belongs to, if any."""
    prefix = Path(python).parent.parent
    if (prefix / "pyvenv.cfg").is_file() or (prefix / "conda-meta").is_dir():
        return prefix
    return None


def imports_in(folder: Path, notebooks: bool = False) -> set[str]:
    """The top-level modules the ``.py`` files under ``folder`` import (absolute imports
    only; a module of the folder itself is not a distribution, and is left out), and
    with ``notebooks`` the code cells of its ``.ipynb`` files."""
    found: set[str] = set()
    own: set[str] = set()
    seen = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        own |= {d for d in dirs}
        for name in names:
            notebook = notebooks and name.endswith(".ipynb")
            if not (name.endswith(".py") or notebook) or seen >= MAX_FILES:
                continue
            seen += 1
            if notebook:
                found |= _notebook_imports(Path(root) / name)
                continue
            own.add(name.removesuffix(".py"))
            found |= _imports(Path(root) / name)
    return {m for m in found - own if m not in sys.stdlib_module_names}


def _imports(path: Path) -> set[str]:
    try:
        if path.stat().st_size > MAX_BYTES:
            return set()
        return _imported(ast.parse(path.read_bytes(), filename=str(path)))
    except (OSError, SyntaxError, ValueError):
        return set()


def _notebook_imports(path: Path) -> set[str]:
    """What a notebook's code cells import; each cell parsed alone, IPython's own lines
    (``%magic``, ``!shell``) left out, a cell that is no Python skipped."""
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return set()
        cells = json.loads(path.read_bytes()).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return set()
    out: set[str] = set()
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            out |= _imported(ast.parse("\n".join(lines)))
        except (SyntaxError, ValueError):
            continue
    return out


def _imported(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def roots(
    cmdline: list[str],
    cwd: Path | None,
    native: list[str],
    prefix: Path | None,
    notebooks: bool = False,
) -> dict[str, list[str]]:
    """What the program was seen to use, for ``imported_packages`` (``notebooks``: what
    the notebooks under ``cwd`` import too — a Jupyter server's kernels run them)."""
    modules = set(native)
    scripts: set[str] = set()
    if cwd is not None:
        modules |= imports_in(cwd, notebooks)
    for i, arg in enumerate(cmdline):
        if arg == "-m" and i + 1 < len(cmdline):
            modules.add(cmdline[i + 1].split(".")[0])
        elif prefix is not None and _in(arg, prefix / "bin"):
            scripts.add(Path(arg).name)
        elif i == 0 or (i == 1 and not arg.startswith("-")):
            scripts.add(Path(arg).name)  # a console script on the PATH: `uvicorn app:app`
    return {"modules": sorted(modules - set(sys.stdlib_module_names)), "scripts": sorted(scripts)}


def _in(arg: str, folder: Path) -> bool:
    return arg.startswith("/") and Path(arg).parent == folder


def venv_command(command: list[str], prefix: Path) -> tuple[list[str], list[str]]:
    """The twin's command in a venv built from the requirements: ``python`` (the
    venv's) for the interpreter, a script of the environment's ``bin/`` by its name
    (the rebuilt venv has it); and the paths into the environment it cannot map."""
    first = command[0]
    script = _in(first, prefix / "bin") and not PYTHON.match(Path(first).name)
    out = [Path(first).name if script else "python"]
    unmapped: list[str] = []
    for arg in command[1:]:
        if _in(arg, prefix / "bin"):
            name = Path(arg).name
            if len(out) == 1 and not script:  # `python /venv/bin/jupyter-lab`: the script runs
                out = [name]
                continue
            out.append(name)
        elif arg.startswith(str(prefix) + "/"):
            unmapped.append(arg)
            out.append(arg)
        else:
            out.append(arg)
    return out, unmapped
