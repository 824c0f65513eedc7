"""Checkpoint cache: trained and pruned models stored by the key of what defines them."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.api.files import atomic_write


class ArtifactCache:
    """Whole pickled modules (pruned shapes differ from the constructor's) under root/kind/key.pt."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        """Where an artifact lives."""
        return self.root / kind / f"{key}.pt"

    def progress_path(self, kind: str, key: str) -> Path:
        """Where an unfinished training of an artifact keeps its last epoch (train() resumes from it)."""
        return self.root / kind / f"{key}.partial.pt"

    def load(self, kind: str, key: str, device: torch.device) -> tuple[nn.Module, dict[str, Any]] | None:
        """The cached model and its metadata, or None."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        # Our own files, written by save(): full modules need weights_only=False.
        blob = torch.load(path, map_location=device, weights_only=False)
        return blob["model"], blob["meta"]

    def save(self, kind: str, key: str, model: nn.Module, meta: dict[str, Any]) -> Path:
        """Write atomically: a crash never leaves a truncated checkpoint under the final name."""
        blob = {"model": model, "meta": json.loads(json.dumps(meta, default=str))}
        # A full disk fails the job with WriteError (naming the file) and leaves any earlier checkpoint intact.
        return atomic_write(self.path(kind, key), lambda fh: torch.save(blob, fh))

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Exclusive lock on an artifact, so concurrent runs build a shared model once (the others wait)."""
        path = self.path(kind, key).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
