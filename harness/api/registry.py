"""Typed plugin registries: decorator registration, entry-point discovery, lookup with suggestions."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.metadata
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from harness.api.errors import RegistrationError, UnknownPluginError

T = TypeVar("T")

KINDS = ("pruner", "architecture", "attack", "dataset")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plugin and where it came from."""

    name: str
    kind: str
    obj: T
    description: str
    source: str
    sha256: str
    distribution: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain-data view for listings and provenance."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "source": self.source,
            "sha256": self.sha256,
            "distribution": self.distribution,
            **{k: v for k, v in self.metadata.items() if isinstance(v, (str, int, float, bool))},
        }


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _source_of(obj: object) -> tuple[str, str]:
    """Source file and its sha256, so results can name the exact plugin code."""
    try:
        path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
    except TypeError:
        path = None
    if not path or not Path(path).is_file():
        return "<unknown>", ""
    return path, hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Registry(Generic[T]):
    """Name -> plugin for one kind; built-ins and third parties register the same way."""

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self.group = f"harness.{kind}s"
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = False

    def register(self, name: str, obj: T, **metadata: Any) -> T:
        """Add `obj` under `name`; a second, different object under one name is an error."""
        if not name or not name.replace("_", "").isalnum() or name != name.lower():
            raise RegistrationError(
                f"Invalid {self.kind} name {name!r}: use snake_case letters, digits and '_'."
            )
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise RegistrationError(
                f"{self.kind} {name!r} must be a subclass of {self.base.__module__}."
                f"{self.base.__qualname__}, got {obj!r}."
            )
        old = self._entries.get(name)
        source, sha = _source_of(obj)
        # The same class re-imported (a reloaded module) re-registers; objects without a name only by identity.
        old_name = getattr(old.obj, "__qualname__", None) if old is not None else None
        if old is not None and old.obj is not obj and (old_name is None or (old.source, old_name) != (source, getattr(obj, "__qualname__", None))):
            raise RegistrationError(
                f"{self.kind} {name!r} is already registered by {old.source}; pick another name."
            )
        description = metadata.pop("description", None) or _first_line(obj)
        distribution = metadata.pop("distribution", None)
        self._entries[name] = Entry(name, self.kind, obj, description, source, sha, distribution, metadata)
        return obj

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and submissions use this)."""
        self._entries.pop(name, None)

    def decorator(self, name: str | Callable[..., Any] | None = None, **metadata: Any) -> Any:
        """`@register_x`, `@register_x()` or `@register_x("name", paper=...)`; name defaults to the object's."""

        def wrap(obj: T) -> T:
            return self.register(name if isinstance(name, str) else obj.__name__, obj, **metadata)  # type: ignore[attr-defined]

        if callable(name) and not isinstance(name, str):
            obj, name = name, None
            return wrap(obj)  # type: ignore[arg-type]
        return wrap

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        load_builtins()
        for ep in importlib.metadata.entry_points(group=self.group):
            before = set(self._entries)
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the harness
                print(f"warning: cannot load plugin {ep.name!r} ({ep.value}): {exc}", file=sys.stderr)
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else None
            if isinstance(loaded, type) and ep.name not in self._entries:
                self.register(ep.name, cast(T, loaded), distribution=dist)
            for new in set(self._entries) - before:
                e = self._entries[new]
                self._entries[new] = Entry(e.name, e.kind, e.obj, e.description, e.source, e.sha256, dist, e.metadata)

    def get(self, name: str) -> Entry[T]:
        """The entry for `name`, or an error listing close matches and what is available."""
        self._discover()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownPluginError(self.kind, name, self._entries) from None

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob, sorted."""
        self._discover()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> Iterator[Entry[T]]:
        """All entries, sorted by name."""
        self._discover()
        for n in sorted(self._entries):
            yield self._entries[n]


_builtins_loaded = False


def load_builtins() -> None:
    """Import every module under the top-level `registry` package; each registers itself."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import registry

    for info in pkgutil.walk_packages(registry.__path__, prefix="registry."):
        importlib.import_module(info.name)
