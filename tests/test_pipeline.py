"""The pipeline's protocol: one training subset per (dataset, seed), equal fine-tuning for every schedule, the control."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.api.config import (
    MODEL_PROTOCOL,
    PROTOCOL_VERSION,
    EvalConfig,
    FinetuneConfig,
    JobSpec,
    PrunerSpec,
    TrainConfig,
)
from harness.api.data import ImageData
from harness.engine import pipeline
from harness.engine.artifacts import ArtifactCache
from harness.engine.budget import finetune_epochs
from harness.training.train import TrainResult, training_subset

CPU = torch.device("cpu")


def _job(pruner: PrunerSpec, sparsity: float, epochs: int, seed: int = 3) -> JobSpec:
    return JobSpec("digits", "small_cnn", seed, pruner, sparsity, TrainConfig(epochs=1, batch_size=64, n_train=300),
                   FinetuneConfig(epochs=epochs, batch_size=64), EvalConfig(n_examples=20), ())


def _record(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int | None]]:
    """Replace training by a recorder of (epochs, shuffle seed, data seed)."""
    calls: list[tuple[int, int, int | None]] = []

    def fake_train(model, data, cfg, seed, device, n_train=None, data_seed=None, progress=None):  # type: ignore[no-untyped-def]
        calls.append((cfg.epochs, seed, data_seed))
        return TrainResult(0.0, 0, 0.0)

    monkeypatch.setattr(pipeline, "train", fake_train)
    return calls


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("epochs", [0, 1, 2, 3, 7])
def test_every_schedule_gets_the_one_shot_budget(steps: int, epochs: int, digits: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Epochs summed over the cuts equal finetune.epochs, and the last cut is followed by fine-tuning."""
    calls = _record(monkeypatch)
    params = (("schedule", "iterative"), ("steps", steps)) if steps > 1 else ()
    job = _job(PrunerSpec("l1_filter", params), 0.5, epochs)
    dense = pipeline.build_model(job, digits, CPU).eval()
    _, meta = pipeline.pruned_model(job, digits, dense, ArtifactCache(tmp_path), CPU)
    assert meta["finetune_epochs"] == finetune_epochs(epochs, steps)
    assert sum(e for e, _, _ in calls) == epochs
    if epochs:
        assert meta["finetune_epochs"][-1] >= 1
        assert calls[-1][0] >= 1  # the final model is fine-tuned after its last cut
    # Every fine-tuning stage trains on the dense model's subset; only the shuffling seed differs by cut.
    assert all(d == job.seed for _, _, d in calls)
    assert len({s for _, s, _ in calls}) == len(calls)


def test_budget_split_is_even_and_ends_with_the_remainder() -> None:
    assert finetune_epochs(30, 1) == [30]
    assert finetune_epochs(30, 4) == [7, 7, 8, 8]
    assert finetune_epochs(2, 3) == [0, 1, 1]
    assert finetune_epochs(0, 3) == [0, 0, 0]


def test_control_gets_the_pruned_rows_fine_tuning(digits: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dense_finetuned prunes nothing and fine-tunes exactly like a one-shot pruned job of the same seed."""
    calls = _record(monkeypatch)
    control, pruned = _job(PrunerSpec("dense_finetuned"), 0.0, 3), _job(PrunerSpec("l1_filter"), 0.5, 3)
    dense = pipeline.build_model(control, digits, CPU).eval()
    model, meta = pipeline.pruned_model(control, digits, dense, ArtifactCache(tmp_path), CPU)
    assert meta["achieved_sparsity"] == 0.0 and model is not dense
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in dense.parameters())
    control_calls = list(calls)
    calls.clear()
    pipeline.pruned_model(pruned, digits, dense, ArtifactCache(tmp_path), CPU)
    assert control_calls == calls == [(3, 3 + pipeline.FINETUNE_SEED, 3)]


def test_dense_training_and_calibration_use_the_same_subset(digits: ImageData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _record(monkeypatch)
    job = _job(PrunerSpec("l1_filter"), 0.5, 1)
    pipeline.dense_model(job, digits, ArtifactCache(tmp_path), CPU)
    assert calls == [(1, job.seed, job.seed)]
    x_sub, _ = training_subset(digits, job.train.n_train, job.seed)
    rows = {tuple(r.flatten().tolist()) for r in (x_sub.float() / 255 if x_sub.dtype == torch.uint8 else x_sub)}
    for xb, _ in pipeline.calibration(digits, job, CPU):
        assert all(tuple(r.flatten().tolist()) in rows for r in xb)


def test_protocol_version_is_in_every_key() -> None:
    job = _job(PrunerSpec("l1_filter"), 0.5, 1)
    assert job.params()["protocol"] == PROTOCOL_VERSION
    assert job.dense_params()["protocol"] == job.pruned_params()["protocol"] == MODEL_PROTOCOL <= PROTOCOL_VERSION
    import harness.api.config as config

    keys = (job.dense_key, job.pruned_key, job.key)
    try:  # an evaluation-only change: new job keys, the cached models stay valid
        config.PROTOCOL_VERSION = PROTOCOL_VERSION + 1
        assert (job.dense_key, job.pruned_key) == keys[:2] and job.key != keys[2]
        config.MODEL_PROTOCOL = MODEL_PROTOCOL + 1  # a change to training, pruning or fine-tuning: every key changes
        assert all(a != b for a, b in zip(keys, (job.dense_key, job.pruned_key, job.key)))
    finally:
        config.PROTOCOL_VERSION, config.MODEL_PROTOCOL = PROTOCOL_VERSION, MODEL_PROTOCOL


@pytest.mark.parametrize("name", ["l1_filter", "random_filter"])
def test_match_macs_reaches_the_target_within_two_percent(name: str, digits: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """match = 'macs': the pipeline finds the pruner's sparsity that keeps half the MACs, measured."""
    from harness.api.data import to_float
    from harness.api.plugins import pruners
    from harness.evaluation.measure import count_macs

    _record(monkeypatch)
    scored: list[int] = []
    cls = pruners.get(name).obj
    importance = cls.importance

    def counting(self: object, model: torch.nn.Module, ctx: object) -> object:
        scored.append(1)
        return importance(self, model, ctx)

    job = _job(PrunerSpec(name), 0.5, 0)
    job = JobSpec(**{**job.__dict__, "match": "macs"})
    dense = pipeline.build_model(job, digits, CPU).eval()
    monkeypatch.setattr(cls, "importance", counting)
    model, meta = pipeline.pruned_model(job, digits, dense, ArtifactCache(tmp_path), CPU)
    x = to_float(digits.x_test[:1])
    assert abs(count_macs(model, x) / count_macs(dense, x) / 0.5 - 1) <= 0.02
    assert meta["sparsity"] != 0.5  # filters are not MACs: the matched filter sparsity differs from the MACs target
    # The dense model is scored once for the whole bisection and the final cut (KL divergence took 12 min per pass).
    assert scored == [1]
