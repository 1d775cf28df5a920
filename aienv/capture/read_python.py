"""What a Python interpreter has installed, asked of the interpreter itself: every
distribution it sees (``python_packages``, as ``pip freeze`` lists them), or those a
program needs (``imported_packages``): the distributions its modules and console
scripts come from, and theirs — the extras a dependent asks for included
(``jsonschema[format-nongpl]`` brings its ``format-nongpl`` requirements).

Blocks (runs the interpreter); called on a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

LIST_TIMEOUT = 30.0  # listing an interpreter's distributions
FREEZE_SKIP = frozenset({"pip", "setuptools", "wheel", "distribute"})  # as `pip freeze`

# Runs in the captured process's interpreter: its installed distributions as JSON, and
# with roots (JSON: modules, scripts) the keys of those they need.
_LIST_DISTRIBUTIONS = r"""
import importlib.metadata as m, json, re, sys
out = {}
for d in m.distributions():
    name = d.metadata['Name']
    if name and name not in out: out[name] = d.version
used = None
key = lambda n: re.sub(r'[-_.]+', '-', n).lower()
if len(sys.argv) > 1:
    want, tops = json.loads(sys.argv[1]), m.packages_distributions()
    todo = [(d, ()) for mod in want['modules'] for d in tops.get(mod, [])]
    todo += [(d.metadata['Name'], ()) for d in m.distributions()
             if any(e.group == 'console_scripts' and e.name in want['scripts']
                    for e in d.entry_points)]
    seen = {}  # a distribution's key -> the extras followed
    while todo:
        n, extras = todo.pop()
        asked = {key(e) for e in extras}
        if key(n) in seen and asked <= seen[key(n)]: continue
        try: reqs = m.requires(n) or []
        except m.PackageNotFoundError: continue
        seen[key(n)] = seen.get(key(n), set()) | asked
        for r in reqs:
            found = re.match(r'\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?', r)
            only = [key(x) for x in re.findall(r'extra\s*==\s*[\'"]([^\'"]+)', r)]
            if found and (not only or set(only) & asked):
                todo.append((found.group(1), tuple(
                    x.strip() for x in (found.group(2) or '').split(',') if x.strip())))
    used = sorted(seen)
print(json.dumps({'python': sys.version.split()[0], 'packages': out, 'used': used}))
"""


def imported_packages(
    interpreter: str,
    environ: dict[str, str],
    owner: tuple[int, int] | None,
    roots: dict[str, list[str]],
) -> tuple[list[str], list[str], str]:
    """Of the interpreter's distributions, those ``roots`` need — the ones its
    ``modules`` (top-level names) and console ``scripts`` come from, and their
    dependencies — and the names of the others; a note when they could not be
    listed. Asked as ``python_packages`` asks."""
    answer, note = _ask(interpreter, environ, owner, [json.dumps(roots)])
    if answer is None:
        return [], [], note
    used = set(answer.get("used") or [])
    kept = [p for p in _pinned(answer) if _key(p.partition("==")[0]) in used]
    others = [p.partition("==")[0] for p in _pinned(answer) if p not in kept]
    return kept, others, ""


def _key(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def python_packages(
    interpreter: str, environ: dict[str, str], owner: tuple[int, int] | None = None
) -> tuple[list[str], str]:
    """``name==version`` of every distribution the interpreter sees (as ``pip freeze``
    would list them), and a note when they could not be listed.

    The interpreter itself is asked (``importlib.metadata``), from ``/`` so that
    nothing in the program's folder is taken for installed, with the variables that
    decide where it looks (``PATH``, ``HOME``, ``PYTHONPATH``, ``PYTHONUSERBASE``).
    Starting it runs its ``site`` hooks (``.pth`` files), which belong to whoever owns
    the process: a node running as root runs it as that ``owner`` (uid, gid), so
    capturing another user's program never runs that user's code as root.
    """
    answer, note = _ask(interpreter, environ, owner, [])
    return ([], note) if answer is None else (_pinned(answer), "")


def _pinned(answer: dict[str, Any]) -> list[str]:
    return sorted(
        (f"{name}=={version}" for name, version in answer["packages"].items()
         if name.lower() not in FREEZE_SKIP),
        key=str.lower,
    )  # fmt: skip


def _ask(
    interpreter: str, environ: dict[str, str], owner: tuple[int, int] | None, args: list[str]
) -> tuple[dict[str, Any] | None, str]:
    """Run the listing script in ``interpreter`` (see ``python_packages``)."""
    as_owner: dict[str, Any] = {}
    if owner is not None and os.geteuid() == 0 and owner[0] != 0:
        as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []}
    keep = ("PATH", "HOME", "PYTHONPATH", "PYTHONUSERBASE", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in environ.items() if k in keep}
    env.setdefault("PATH", os.defpath)
    try:
        res = subprocess.run(
            [interpreter, "-c", _LIST_DISTRIBUTIONS, *args],
            capture_output=True,
            text=True,
            timeout=LIST_TIMEOUT,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
            **as_owner,
        )
        data = json.loads(res.stdout) if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return None, f"could not list the packages of {interpreter}: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("packages"), dict):
        why = (res.stderr.strip().splitlines() or ["no answer"])[-1]
        return None, f"could not list the packages of {interpreter}: {why}"
    return data, ""
