"""The shape of the code stays as docs/architecture.md draws it: sub-packages import
only the ones below them (type-only imports included) and never form a cycle;
rooms stay small; coroutines carry no ``async_`` prefix."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "aienv"
PLUGIN = ROOT / "plugins" / "aienv-venv" / "src"

#: top first; a part may import only parts after it in this list
LAYERS = [
    "__main__",
    "cli",
    "node",
    "api",
    "flows",
    "capture",
    "transfer",
    "discovery",
    "peer",
    "runtime",
    "system",
    "workspace",
    "archive",
    "state",
    "dockerengine",
    "config",
    "security",
    "identity",
    "names",
    "units",
    "errors",
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def part_of(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[0] == "aienv" else None


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path, me: str) -> list[str]:
    """Every module ``path`` (module ``me``) imports, at any depth: type-only and local
    imports too, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.append(node.module)
    return found


def edges() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) → the files that make the edge."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        me = part_of(name)
        if me is None or me == "__init__":
            continue
        for module in imports(path, name):
            other = part_of(module)
            if other and other != me:
                out.setdefault((me, other), []).append(str(path.relative_to(ROOT)))
    return out


def test_every_part_has_a_layer() -> None:
    parts = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    parts |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_parts_import_only_downward() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{a} -> {b} ({', '.join(sorted(set(files)))})"
        for (a, b), files in edges().items()
        if rank[b] <= rank[a]
    ]
    assert not upward, "imports that point up (or sideways):\n" + "\n".join(upward)


def test_no_cycle_between_parts() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in edges():
        graph.setdefault(a, set()).add(b)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for start in sorted(graph):
        visit(start, [])


def test_the_walk_finds_type_only_local_and_relative_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from aienv.node import Node\n"
        "def f():\n    import aienv.api.app\n"
        "from ..flows import clone\n"
    )
    module = tmp_path / "x.py"
    module.write_text(source)
    found = imports(module, "aienv.system.x")
    assert {"aienv.node", "aienv.api.app", "aienv.flows"} <= set(found)
    assert {part_of(m) for m in found} >= {"node", "api", "flows"}


def sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *PLUGIN.rglob("*.py")])


def test_modules_are_small() -> None:
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in sources()
        if (n := p.read_text().count("\n")) > MAX_MODULE_LINES
    ]
    assert not big, f"split these (over {MAX_MODULE_LINES} lines):\n" + "\n".join(big)


def test_functions_are_small() -> None:
    long = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length}")
    assert not long, f"split these (over {MAX_FUNCTION_LINES} lines):\n" + "\n".join(long)


@pytest.mark.parametrize("folder", [PACKAGE, PLUGIN], ids=["aienv", "aienv-venv"])
def test_coroutines_carry_no_async_prefix(folder: Path) -> None:
    """One naming rule: ``async def`` already says it; a prefix that says it again
    drifts (33 of 168 coroutines had it, with no rule for which)."""
    named = [
        f"{p.relative_to(ROOT)}:{n.lineno} {n.name}"
        for p in sorted(folder.rglob("*.py"))
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.AsyncFunctionDef) and n.name.startswith("async_")
    ]
    assert not named, "rename these:\n" + "\n".join(named)
