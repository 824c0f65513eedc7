"""Dense models this project trained and committed under `checkpoints/`: a fresh clone restores them into the
artifact cache instead of training them again.

A published folder holds `seed<N>.pt` state dicts and `keys.json`, which maps the dense key of the training run
that produced each file to the file, its sha256 and the training's metadata. Restoring reproduces the cached
model exactly (same weights, same metadata), so a job's results do not depend on whether its dense model was
trained in this run or restored; its key stays the key of the training run. Bringing a model trained elsewhere is
`[train] checkpoint` instead (harness.engine.checkpoints), keyed by the file's content.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.api.config import JobSpec, for_device
from harness.api.data import ImageData
from harness.api.errors import CheckpointError
from harness.api.files import atomic_write, atomic_write_text
from harness.api.nets import Normalized
from harness.api.paths import CHECKPOINTS_DIR, REPO
from harness.api.plugins import architectures
from harness.engine.artifacts import ArtifactCache
from harness.engine.checkpoints import SEED_FILE, fit, sha256_file
from harness.engine.grid import load_grid

INDEX = "keys.json"
SUMS = "SHA256SUMS"
# What the cache records about a training run, carried over so that restored jobs report the same numbers.
META_KEYS = ("train_seconds", "train_loss", "train_img_per_s", "params")


@dataclass(frozen=True)
class Published:
    """One published dense model."""

    path: Path
    sha256: str
    meta: dict[str, Any]


@functools.cache
def _index(path: Path, mtime_ns: int) -> dict[str, Any]:
    return json.loads(path.read_text())


def find(dense_key: str, root: Path | None = None) -> Published | None:
    """The published model trained under `dense_key` (in root, default the repository's checkpoints/), or None."""
    for index in sorted((root or CHECKPOINTS_DIR).glob(f"*/{INDEX}")):
        # Read once per file version: the DAG asks for every job of a grid.
        entry = _index(index, index.stat().st_mtime_ns).get(dense_key)
        if entry is not None:
            return Published(index.parent / entry["file"], entry["sha256"], dict(entry.get("meta", {})))
    return None


def restore(job: JobSpec, data: ImageData, device: torch.device, pub: Published) -> tuple[nn.Module, dict[str, Any]]:
    """The published model as the cache held it: checked against its recorded sha256, with its training metadata."""
    if not pub.path.is_file():
        raise CheckpointError(f"published model {pub.path} is listed in {INDEX} but missing; restore it with `git checkout -- {pub.path.parent}`.")
    sha = sha256_file(pub.path)
    if sha != pub.sha256:
        raise CheckpointError(f"published model {pub.path}: sha256 {sha[:12]} differs from {INDEX}'s {pub.sha256[:12]}; restore it with `git checkout -- {pub.path.parent}`.")
    net = architectures.get(job.architecture).obj(num_classes=data.num_classes, in_channels=data.in_channels)
    model = Normalized(net, data.mean, data.std)
    fit(model, torch.load(pub.path, map_location="cpu", weights_only=True), f"published model {pub.path}", job.architecture)
    where = pub.path.relative_to(REPO) if pub.path.is_relative_to(REPO) else pub.path
    return model.to(device).eval(), pub.meta | {"restored_from": str(where)}


def publish(cache_root: Path, job: JobSpec, folder: Path) -> str:
    """Write the cached dense model of `job` as `folder/seed<N>.pt`, list it in keys.json and SHA256SUMS; its sha256."""
    cache = ArtifactCache(Path(cache_root) / "artifacts")
    hit = cache.load("dense", job.dense_key, torch.device("cpu"))
    if hit is None:
        raise CheckpointError(f"no dense model {job.dense_key} in {cache.path('dense', job.dense_key).parent}: run the grid until its dense training finishes, then publish.")
    model, cached_meta = hit
    out = Path(folder) / SEED_FILE.format(seed=job.seed)
    atomic_write(out, lambda fh: torch.save(model.state_dict(), fh))
    sha = sha256_file(out)
    index_path = Path(folder) / INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    # The file was just overwritten: a model published there before (another recipe, same seed) is gone from it.
    index = {k: e for k, e in index.items() if e["file"] != out.name}
    meta = {k: cached_meta[k] for k in META_KEYS if k in cached_meta}
    index[job.dense_key] = {"file": out.name, "sha256": sha, "seed": job.seed, "meta": meta}
    atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True) + "\n")
    files = sorted({e["file"]: e["sha256"] for e in index.values()}.items())
    atomic_write_text(Path(folder) / SUMS, "".join(f"{s}  {f}\n" for f, s in files))
    return sha


def publish_grid(grid: str, cache_root: Path, out: Path, device_type: str = "cpu") -> list[tuple[Path, str]]:
    """Publish every dense model of `grid` found in the cache under out/<architecture>-<dataset>/; (file, sha256) each."""
    cache = ArtifactCache(Path(cache_root) / "artifacts")
    done: dict[str, tuple[Path, str]] = {}
    for job in (for_device(j, device_type) for j in load_grid(grid).jobs):
        if job.dense_key in done or job.train.checkpoint is not None or not cache.path("dense", job.dense_key).is_file():
            continue
        folder = Path(out) / f"{job.architecture}-{job.dataset}"
        done[job.dense_key] = (folder / SEED_FILE.format(seed=job.seed), publish(cache_root, job, folder))
    return list(done.values())
