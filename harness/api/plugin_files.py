"""Loading a plugin from a single Python file (submissions, test plugins) as its own module."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from harness.api.errors import HarnessError
from harness.api.plugins import REGISTRIES


def module_name(path: Path) -> str:
    """A stable, unique module name for a plugin file (by its content hash)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"harness_plugin_{Path(path).stem}_{digest}"


def load_plugin_file(path: str | Path) -> list[str]:
    """Import `path` so its decorators register; returns the names it added, as 'kind:name'."""
    path = Path(path).resolve()
    if not path.is_file():
        raise HarnessError(f"Plugin file {path} does not exist.")
    for reg in REGISTRIES.values():
        reg.names()  # built-ins first, so a file cannot silently shadow one
    before = {kind: set(reg.names()) for kind, reg in REGISTRIES.items()}
    name = module_name(path)
    if name in sys.modules:
        return []
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HarnessError(f"Cannot import {path} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return [f"{kind}:{n}" for kind, reg in REGISTRIES.items() for n in sorted(set(reg.names()) - before[kind])]
