"""Progress files of interrupted work (a training's last epoch, an evaluation's finished attacks): read back safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_progress(path: Path | None, fingerprint: dict[str, Any], device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The state an interrupted call saved at `path` under the same `fingerprint`, or None (no file, other settings)."""
    if path is None or not path.is_file():
        return None
    # Our own files (tensors and plain Python values), written with the fingerprint inside.
    state = torch.load(path, map_location=device, weights_only=False)
    return state if isinstance(state, dict) and state.get("fingerprint") == fingerprint else None
