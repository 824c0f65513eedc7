"""Dense models the user brings (`[train] checkpoint`): which file a seed reads, its sha256, loading and checking it.

A checkpoint is a state dict for the grid's architecture: the harness's own `Normalized` wrapper (keys `net.*`,
`mean`, `std`; the dense models the harness publishes) or the bare network, trained on inputs normalised with the
dataset's mean and std. A folder holds one file per seed, `seed<N>.pt`. `robustbench:DATASET/THREAT/NAME` reads
RobustBench's model zoo instead (harness.engine.zoo).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.api.config import JobSpec, TrainConfig
from harness.api.data import ImageData
from harness.api.errors import CheckpointError, GridError
from harness.api.nets import Normalized
from harness.api.paths import REPO
from harness.api.plugins import architectures
from harness.engine import zoo
from harness.evaluation.runs import accuracy

SEED_FILE = "seed{seed}.pt"
WRAPPERS = ("state_dict", "model_state_dict")  # common containers around a state dict in training scripts


@dataclass(frozen=True)
class Source:
    """The file a job's dense model comes from."""

    spec: str  # as the grid wrote it
    path: Path
    sha256: str

    def describe(self) -> dict[str, str]:
        """Plain data for provenance."""
        return {"checkpoint": self.spec, "file": str(self.path), "sha256": self.sha256}


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file, hashed once per (path, size, mtime)."""
    st = path.stat()
    return _sha256(path.resolve(), st.st_size, st.st_mtime_ns)


def _existing(spec: str) -> Path | None:
    """A relative path is read from the working directory, then from the repository (committed checkpoints)."""
    path = Path(spec).expanduser()
    for candidate in [path] if path.is_absolute() else [path, REPO / path]:
        if candidate.exists():
            return candidate
    return None


def resolve(train: TrainConfig, seed: int) -> Source:
    """The file `train.checkpoint` names for `seed`; raises CheckpointError with the fix."""
    spec = str(train.checkpoint)
    if spec.startswith(zoo.PREFIX):
        path = zoo.model_file(spec, train.model_dir)
        return Source(spec, path, sha256_file(path))
    found = _existing(spec)
    if found is None:
        raise CheckpointError(f"[train] checkpoint {spec!r}: no such file or folder; give a state dict file or a folder of {SEED_FILE.format(seed='<N>')} files.")
    if found.is_dir():
        path = found / SEED_FILE.format(seed=seed)
        if not path.is_file():
            have = sorted(p.name for p in found.glob("*.pt")) or ["no .pt files"]
            raise CheckpointError(f"[train] checkpoint folder {spec!r} has no {path.name} for seed {seed} (has: {', '.join(have)}); add it or drop the seed.")
        return Source(spec, path, sha256_file(path))
    return Source(spec, found, sha256_file(found))


def checkpoint_shas(train: TrainConfig, seeds: list[int]) -> dict[int, str | None]:
    """Seed -> sha256 of its checkpoint (None when the grid trains); a grid-time error for a missing file."""
    if train.checkpoint is None:
        return {s: None for s in seeds}
    try:
        return {s: resolve(train, s).sha256 for s in seeds}
    except CheckpointError as exc:
        raise GridError(str(exc)) from None


def _read(path: Path) -> Any:
    """The file's tensors, read without running pickled code (weights_only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the class it refused ("Unsupported global"); other refusals are bytes that are no pickle at all.
        why = "it holds pickled objects, e.g. a whole model" if "global" in str(exc).lower() else "unreadable: not a file torch.save wrote"
    except (RuntimeError, EOFError) as exc:
        why = f"unreadable: {type(exc).__name__}"
    raise CheckpointError(f"checkpoint {path}: not a plain state dict ({why}); save one with torch.save(model.state_dict(), path).")


def _state_dict(blob: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved state dict, unwrapped from common containers and DataParallel's `module.` prefix."""
    for key in WRAPPERS:
        if isinstance(blob, Mapping) and isinstance(blob.get(key), Mapping):
            blob = blob[key]
    if not isinstance(blob, Mapping) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"checkpoint {path}: not a state dict (a mapping of names to tensors); save one with torch.save(model.state_dict(), path).")
    return {k.removeprefix("module."): v for k, v in blob.items()}


def _mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps `state` from loading strictly into `model`, in a few words; None when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "", f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
             f"{len(shapes)} of another shape (e.g. {shapes[0]})" if shapes else ""]
    text = ", ".join(p for p in parts if p)
    return f"keys: {text}" if text else None


def fit(model: Normalized, state: Mapping[str, torch.Tensor], what: str, arch: str) -> None:
    """Load `state` into the wrapper (wrapper keys) or its network (bare keys); one clear line when it does not fit."""
    target: nn.Module = model if any(k.startswith("net.") for k in state) else model.net
    problem = _mismatch(target, state)
    if problem:
        raise CheckpointError(f"{what} is not a state dict for architecture {arch!r} ({problem}); name the architecture it was saved from in the grid, or save the right model.")
    target.load_state_dict(state, strict=True)


def check_fits(jobs: list[JobSpec], data: ImageData) -> None:
    """Fit each checkpoint the jobs of one dataset (`data`) name into their architecture before any job runs; CheckpointError if one does not."""
    # A file of another architecture, or no state dict, would otherwise fail every job of the grid one by one.
    # "robustbench:" checkpoints need robustbench to import here; zoo.load checks the model itself in the job.
    seen: set[tuple[str, str]] = set()
    for job in jobs:
        if job.train.checkpoint is None or (str(job.checkpoint_sha256), job.architecture) in seen:
            continue
        seen.add((str(job.checkpoint_sha256), job.architecture))
        src = resolve(job.train, job.seed)
        if src.spec.startswith(zoo.PREFIX):
            zoo.robustbench_load_model()
            continue
        net = architectures.get(job.architecture).obj(num_classes=data.num_classes, in_channels=data.in_channels)
        fit(Normalized(net, data.mean, data.std), _state_dict(_read(src.path), src.path), f"checkpoint {src.path}", job.architecture)


def load_dense(job: JobSpec, data: ImageData, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The job's dense model from its checkpoint, checked against the grid's key, with its clean accuracy measured."""
    t0 = time.perf_counter()
    src = resolve(job.train, job.seed)
    if src.sha256 != job.checkpoint_sha256:
        raise CheckpointError(f"checkpoint {src.path} changed since the grid was read (sha256 {src.sha256[:12]}, expected {str(job.checkpoint_sha256)[:12]}); run again.")
    net = architectures.get(job.architecture).obj(num_classes=data.num_classes, in_channels=data.in_channels)
    if src.spec.startswith(zoo.PREFIX):
        model = zoo.load(src.spec, job.train.model_dir, net, job.architecture, data)
    else:
        model = Normalized(net, data.mean, data.std)
        fit(model, _state_dict(_read(src.path), src.path), f"checkpoint {src.path}", job.architecture)
    model = model.to(device).eval()
    clean = float(accuracy(model, data.x_test, data.y_test, device).float().mean())
    meta = {"train_seconds": 0.0, "load_seconds": time.perf_counter() - t0, "checkpoint": src.describe(),
            "dense_clean_accuracy": clean, "dense_test_examples": len(data.y_test), "params": job.dense_params()}
    return model, meta


def export(cached: Path, out: Path) -> str:
    """Write a cached dense model (artifacts/dense/KEY.pt) as a plain state dict at `out`; returns its sha256."""
    blob = torch.load(cached, map_location="cpu", weights_only=False)  # the harness's own cache file
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob["model"].state_dict(), out)
    return sha256_file(out)
