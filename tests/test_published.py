"""Published dense models: a fresh clone restores the study's committed models into the cache instead of training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from harness.api.config import for_device
from harness.api.data import ImageData
from harness.api.errors import CheckpointError
from harness.engine import pipeline, published
from harness.engine.artifacts import ArtifactCache
from harness.engine.grid import load_grid
from harness.engine.pipeline import dense_model
from harness.scheduling.dag import build_dag

CPU = torch.device("cpu")


def test_a_published_model_is_restored_exactly_and_never_retrained(digits: ImageData, tiny_grid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [for_device(j, "cpu") for j in load_grid(str(tiny_grid)).jobs]
    job = jobs[0]
    trained, meta = dense_model(job, digits, ArtifactCache(tmp_path / "run" / "artifacts"), CPU)
    ((path, sha),) = published.publish_grid(str(tiny_grid), tmp_path / "run", tmp_path / "pub")
    assert path == tmp_path / "pub" / f"{job.architecture}-{job.dataset}" / "seed0.pt"  # one dense model for both jobs
    assert (path.parent / "SHA256SUMS").read_text() == f"{sha}  seed0.pt\n"

    # A fresh clone: an empty cache, the published folder committed.
    monkeypatch.setattr(published, "CHECKPOINTS_DIR", tmp_path / "pub")
    fresh = ArtifactCache(tmp_path / "clone" / "artifacts")
    assert {t.stage for t in build_dag(jobs, fresh.root).values()} == {"pruned", "eval"}  # no training task
    assert "dense" in {t.stage for t in build_dag(jobs, fresh.root, fresh=True).values()}  # --fresh retrains

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a published dense model was trained again")

    monkeypatch.setattr(pipeline, "train", no_training)
    restored, rmeta = dense_model(job, digits, fresh, CPU)
    for (name, a), b in zip(restored.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), name
    assert rmeta["train_seconds"] == meta["train_seconds"] and rmeta["train_img_per_s"] == meta["train_img_per_s"]
    assert rmeta["restored_from"].endswith("seed0.pt") and fresh.path("dense", job.dense_key).is_file()

    # A published file that no longer matches its recorded sha256 is refused with the fix.
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    with pytest.raises(CheckpointError, match="sha256 .* differs .*git checkout"):
        dense_model(job, digits, ArtifactCache(tmp_path / "other" / "artifacts"), CPU)


def test_publishing_needs_the_trained_model(tiny_grid: Path, tmp_path: Path) -> None:
    job = for_device(load_grid(str(tiny_grid)).jobs[0], "cpu")
    with pytest.raises(CheckpointError, match="run the grid until its dense training finishes"):
        published.publish(tmp_path, job, tmp_path / "pub")
    assert published.publish_grid(str(tiny_grid), tmp_path, tmp_path / "pub") == []


def test_republishing_a_seed_replaces_its_entry(digits: ImageData, tiny_grid: Path, tmp_path: Path) -> None:
    job = for_device(load_grid(str(tiny_grid)).jobs[0], "cpu")
    longer = dataclasses.replace(job, train=dataclasses.replace(job.train, epochs=job.train.epochs + 1))
    cache = ArtifactCache(tmp_path / "artifacts")
    for j in (job, longer):
        dense_model(j, digits, cache, CPU)
    folder = tmp_path / "pub"
    published.publish(tmp_path, job, folder)
    sha = published.publish(tmp_path, longer, folder)  # a new recipe for the same seed overwrites seed0.pt
    index = json.loads((folder / "keys.json").read_text())
    assert list(index) == [longer.dense_key] and index[longer.dense_key]["sha256"] == sha
    assert (folder / "SHA256SUMS").read_text() == f"{sha}  seed0.pt\n"
