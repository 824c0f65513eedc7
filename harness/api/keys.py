"""Content keys: the sha256 of canonical JSON, so equal parameters always name the same job or artifact."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats as repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def key_of(obj: Any, length: int = 16) -> str:
    """Short hex digest of the canonical JSON of `obj`."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:length]
