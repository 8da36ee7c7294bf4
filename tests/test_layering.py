"""The house rules on imports and module size (CONTRIBUTING.md), read from the source with `ast`.

Every import counts, including those inside function bodies (the CLI's lazy torch imports): an import in a
function still makes a circle, it only hides it until the function runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("degrader", "sr", "cli")
MAX_LINES = 400
# Over MAX_LINES for now, each with why; a file that has shrunk below the limit must leave this list.
OVER_LIMIT: dict[str, str] = {}  # path -> why it may stay over MAX_LINES for now


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages (a package is its `__init__`)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = module_files()


def imports(name: str) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every import in `name`'s source, relative ones resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (base, alias.name))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a name from a package counts as importing the package)."""
    return {name: {m for m, _ in imports(name) if m in MODULES and m != name} for name in MODULES}


def test_the_checker_sees_the_project():
    assert {"degrader.run", "degrader.shards.tar", "sr.train", "cli.degrade"} <= set(MODULES)
    assert "degrader.checkpoint" in graph()["degrader.run"]  # an import it must find


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, colouring modules on the stack)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(("lower", "upper"), [("degrader", "sr"), ("degrader", "cli"), ("sr", "cli")])
def test_arrows_point_one_way(lower, upper):
    wrong = sorted(
        f"{name} imports {m}"
        for name in MODULES
        if name.split(".")[0] == lower
        for m, _ in imports(name)
        if m.split(".")[0] == upper
    )
    assert not wrong, f"{lower} must not import {upper}: {wrong}"


def test_no_private_name_imported_from_another_module():
    wrong = sorted(
        f"{name} imports {m}.{taken}"
        for name in MODULES
        for m, taken in imports(name)
        if m in MODULES and taken and taken.startswith("_") and not taken.startswith("__")
    )
    assert not wrong, f"private names used across modules (make them public where they belong): {wrong}"


def test_modules_stay_small():
    lines = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for name, path in MODULES.items()
        if name.split(".")[0] in ("degrader", "sr")
    }
    over = {path: n for path, n in lines.items() if n > MAX_LINES and path not in OVER_LIMIT}
    assert not over, f"modules over {MAX_LINES} lines (split them by concept): {over}"
    shrunk = [path for path in OVER_LIMIT if lines.get(path, 0) <= MAX_LINES]
    assert not shrunk, f"{shrunk} are within {MAX_LINES} lines now: remove them from OVER_LIMIT"
