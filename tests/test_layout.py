"""The package layout: dependencies point one way (contracts <- algorithms <- engine <- machinery <- CLI), no cycles."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each folder of harness/ may import from (besides itself). Anything else is a forbidden direction.
ALLOWED: dict[str, set[str]] = {
    "api": set(),
    "attacks": {"api"},
    "pruning": {"api"},
    "datasets": {"api"},
    "training": {"api", "attacks"},
    "evaluation": {"api", "attacks"},
    "engine": {"api", "attacks", "pruning", "datasets", "training", "evaluation"},
    "store": {"api"},
    "site": {"api", "store"},
    "scheduling": {"api", "engine", "store", "site"},
    "submission": {"api", "engine", "store", "scheduling"},
    "cli": {"api", "engine", "store", "site", "scheduling", "submission"},
}
# The built-in plugins are written against the contracts and the algorithms, like a user's file.
PLUGIN_ALLOWED = {"api", "attacks", "pruning", "datasets", "training"}
# The science never reaches the machinery (the rule, kept explicit so a widened ALLOWED cannot hide it).
SCIENCE = {"api", "attacks", "pruning", "training", "evaluation"}
MACHINERY = {"store", "scheduling", "site", "submission", "cli"}


def module_name(path: Path) -> str:
    """Dotted module name of a file under the repository root."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def harness_imports(path: Path) -> set[str]:
    """Every harness module a file imports, at module level or inside a function (lazy imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "harness":
                out |= {f"harness.{a.name}" for a in node.names}
            elif node.module.startswith("harness."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("harness.")}
    return out


def folder(module: str) -> str | None:
    """The harness folder a module belongs to (None for the package root and __main__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ROOT / "harness" / parts[1]).is_dir()) else None


def package_files() -> list[Path]:
    """Every Python file of the package."""
    return sorted((ROOT / "harness").rglob("*.py"))


def test_every_folder_is_declared() -> None:
    folders = {p.name for p in (ROOT / "harness").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(ALLOWED), "a new folder needs its place in ALLOWED"


@pytest.mark.parametrize("path", package_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    src = folder(module_name(path))
    if src is None:
        return
    for target in harness_imports(path):
        dst = folder(target)
        if dst is None or dst == src:
            continue
        assert not (src in SCIENCE and dst in MACHINERY), f"{module_name(path)} (science) imports {target} (machinery)"
        assert dst in ALLOWED[src], f"{module_name(path)} imports {target}: {src}/ may import only {sorted(ALLOWED[src])}"


@pytest.mark.parametrize("path", sorted((ROOT / "registry").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_contracts_and_algorithms_only(path: Path) -> None:
    for target in harness_imports(path):
        dst = folder(target)
        assert dst is None or dst in PLUGIN_ALLOWED, f"{module_name(path)} imports {target}"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports by absolute name; a relative import shows as '.'."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            out.add("." if node.level else node.module or "")
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "registry").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_do_not_import_each_other(path: Path) -> None:
    """What two plugins share lives in harness/ (e.g. harness/datasets/sources.py), so each plugin stands alone."""
    others = {m for m in imported_modules(path) if m == "." or m.split(".")[0] == "registry"}
    assert not others, f"{module_name(path)} imports {sorted(others)}: move what plugins share into harness/"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    modules = {module_name(p): p for p in package_files()}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in harness_imports(path):
            # `from harness.x import name` may name a submodule or an attribute: resolve to the module imported.
            graph[name].add(target if target in modules else target.rsplit(".", 1)[0])
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_says_what_it_owns() -> None:
    missing = [module_name(p) for p in package_files() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == [], f"modules without a docstring: {missing}"
