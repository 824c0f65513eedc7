"""The names and paths a plugin author reads in the README, docs/ and examples/ exist there: a move cannot break them silently."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from harness.api.plugins import architectures, attacks, datasets, pruners

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# What a plugin author imports, from where (README "Adding a plugin", docs/submitting.md, docs/pruners.md).
PUBLIC: dict[str, list[str]] = {
    "harness": [
        "register_pruner", "register_attack", "register_architecture", "register_dataset",
        "Pruner", "PruneContext", "FilterPruner", "Attack", "ImageData", "Normalized", "HarnessError",
    ],
    "harness.pruning": [
        "Pruner", "PruneContext", "FilterPruner", "ScoredFilterPruner", "LayerPruner", "UnstructuredPruner",
        "GroupImportance", "RandomImportance",
    ],
}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
BACKTICKED = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"harness(?:\.[A-Za-z_]\w*)+")
SOURCE_PATH = re.compile(r"(?:harness|registry)/[\w/.-]*\.py")


def harness_imports(code: str) -> list[str]:
    """Each `import harness...` / `from harness... import ...` statement of a Python text, as one line."""
    tree = ast.parse(code)
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "harness")
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "harness" for a in node.names))
    ]


def documented_imports() -> list[tuple[str, str]]:
    """(where, statement) for every harness import in the docs' Python code blocks and in the examples."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        for block in FENCE.findall(doc.read_text()):
            try:
                statements = harness_imports(block)
            except SyntaxError:  # a shell or TOML block
                continue
            found += [(doc.name, s) for s in statements]
    for example in EXAMPLES:
        found += [(f"examples/{example.name}", s) for s in harness_imports(example.read_text())]
    return found


def entry_point_groups() -> set[str]:
    """`harness.pruners` and co.: documented names that are entry-point groups, not modules."""
    return {r.group for r in (pruners, attacks, architectures, datasets)}


def documented_references() -> list[tuple[str, str]]:
    """(doc, text) for every backticked dotted harness name and harness/ or registry/ source path in the docs."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        for ticked in BACKTICKED.findall(doc.read_text()):
            found += [(doc.name, m) for m in DOTTED.findall(ticked) if m not in entry_point_groups()]
            found += [(doc.name, p) for p in SOURCE_PATH.findall(ticked) if not re.search(r"[<*{]", ticked)]
    return sorted(set(found))


def resolve(dotted: str) -> Any:
    """The object a dotted name denotes: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_docs_show_imports_to_check() -> None:
    statements = {s for _, s in documented_imports()}
    assert {"from harness import register_pruner", "from harness.pruning import ScoredFilterPruner"} <= statements


@pytest.mark.parametrize(("where", "statement"), documented_imports(), ids=lambda v: str(v))
def test_documented_import_runs(where: str, statement: str) -> None:
    exec(compile(statement, where, "exec"), {})


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, names in PUBLIC.items() for n in names])
def test_plugin_author_name_is_exported(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    assert name in mod.__all__, f"{module}.__all__ lacks {name}"
    assert getattr(mod, name) is resolve(f"harness.{name}" if name in PUBLIC["harness"] else f"harness.pruning.{name}")


def test_one_class_behind_each_name() -> None:
    """`harness.Pruner` and `harness.pruning.Pruner` are the same class, so isinstance checks agree."""
    import harness
    import harness.pruning

    for name in set(PUBLIC["harness"]) & set(PUBLIC["harness.pruning"]):
        assert getattr(harness, name) is getattr(harness.pruning, name)


@pytest.mark.parametrize(("doc", "ref"), documented_references(), ids=lambda v: str(v))
def test_documented_name_or_path_exists(doc: str, ref: str) -> None:
    if "/" in ref:
        assert (ROOT / ref).is_file(), f"{doc} names {ref}, which does not exist"
    else:
        try:
            resolve(ref)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{doc} names {ref}, which does not resolve: {exc}")
