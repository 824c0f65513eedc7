"""One job's stages: train dense (cached) -> prune -> fine-tune (cached) -> measure -> attack."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from harness.api.config import JobSpec
from harness.api.data import ImageData, subset, to_float
from harness.api.errors import PruningError
from harness.api.metrics import Metric
from harness.api.nets import Normalized
from harness.api.plugins import architectures, attacks, datasets, pruners
from harness.api.pruner import PruneContext
from harness.engine.artifacts import ArtifactCache
from harness.engine.checkpoints import load_dense
from harness.engine.trust import trusted_class
from harness.evaluation.measure import (
    count_macs,
    count_nonzero,
    count_params,
    file_size,
    latency_ms,
)
from harness.evaluation.protocol import evaluate
from harness.training.train import train

CALIBRATION_BATCHES = 4
LATENCY_BATCH = 128


def build_model(job: JobSpec, data: ImageData, device: torch.device) -> nn.Module:
    """A freshly initialised model for the job's architecture, seeded."""
    torch.manual_seed(job.seed)
    net = architectures.get(job.architecture).obj(num_classes=data.num_classes, in_channels=data.in_channels)
    return Normalized(net, data.mean, data.std).to(device)


def dense_model(job: JobSpec, data: ImageData, cache: ArtifactCache, device: torch.device, fresh: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The trained dense model, trained once per (dataset, architecture, seed, train settings)."""
    with cache.lock("dense", job.dense_key):
        return _dense_model(job, data, cache, device, fresh)


def _dense_model(job: JobSpec, data: ImageData, cache: ArtifactCache, device: torch.device, fresh: bool) -> tuple[nn.Module, dict[str, Any]]:
    hit = None if fresh else cache.load("dense", job.dense_key, device)
    if hit is not None:
        model, meta = hit
        return model.eval(), meta | {"cached": True}
    if job.train.checkpoint is not None:  # the user's dense model, checked and measured
        model, meta = load_dense(job, data, device)
    else:
        model = build_model(job, data, device)
        t0 = time.perf_counter()
        loss = train(model, data, job.train, job.seed, device, n_train=job.train.n_train)
        meta = {"train_seconds": time.perf_counter() - t0, "train_loss": loss, "params": job.dense_params()}
    cache.save("dense", job.dense_key, model, meta)
    return model.eval(), meta | {"cached": False}


def calibration(data: ImageData, job: JobSpec, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few seeded training batches for data-driven criteria."""
    bs = job.finetune.batch_size
    x, y = subset(data.x_train, data.y_train, CALIBRATION_BATCHES * bs, seed=job.seed)
    return [(to_float(x[i : i + bs]).to(device), y[i : i + bs].to(device)) for i in range(0, len(y), bs)]


def pruned_model(job: JobSpec, data: ImageData, dense: nn.Module, cache: ArtifactCache, device: torch.device, fresh: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of the dense model and fine-tune it; cached by the pruned key."""
    if job.pruner.name == "none":
        return dense, {"prune_seconds": 0.0, "finetune_seconds": 0.0, "achieved_sparsity": 0.0}
    with cache.lock("pruned", job.pruned_key):
        return _pruned_model(job, data, dense, cache, device, fresh)


def _pruned_model(job: JobSpec, data: ImageData, dense: nn.Module, cache: ArtifactCache, device: torch.device, fresh: bool) -> tuple[nn.Module, dict[str, Any]]:
    hit = None if fresh else cache.load("pruned", job.pruned_key, device)
    if hit is not None:
        model, meta = hit
        return model.eval(), meta | {"cached": True}
    pruner = pruners.get(job.pruner.name).obj(**dict(job.pruner.params))
    model = copy.deepcopy(dense)
    ft_seconds = 0.0

    def fine_tune(m: nn.Module, step: int) -> None:
        nonlocal ft_seconds
        t = time.perf_counter()
        steps = max(pruner.steps, 1)
        cfg = type(job.finetune)(**{**job.finetune.__dict__, "epochs": max(job.finetune.epochs // steps, 1)})
        train(m, data, cfg, job.seed + 1000 + step, device, n_train=job.train.n_train)
        ft_seconds += time.perf_counter() - t

    ctx = PruneContext(
        example_inputs=to_float(data.x_train[:2]).to(device),
        calibration=calibration(data, job, device),
        seed=job.seed,
        device=device,
        fine_tune=fine_tune,
    )
    t0 = time.perf_counter()
    model.eval()
    model = pruner.prune(model, job.sparsity, ctx)
    prune_seconds = time.perf_counter() - t0 - ft_seconds
    t = time.perf_counter()
    remaining = job.finetune.epochs - (pruner.steps - 1) * max(job.finetune.epochs // max(pruner.steps, 1), 1)
    if remaining > 0:
        cfg = type(job.finetune)(**{**job.finetune.__dict__, "epochs": remaining})
        train(model, data, cfg, job.seed + 2000, device, n_train=job.train.n_train)
    ft_seconds += time.perf_counter() - t
    model = pruner.finalize(model).eval()
    # Measured by harness code, never by a method a submitted file could override.
    trusted = trusted_class(type(pruner))
    achieved = trusted.achieved_sparsity(pruner, dense, model)
    tol = trusted.tolerance(pruner, dense)
    if abs(achieved - job.sparsity) > tol + 1e-9:
        raise PruningError(
            f"pruner {job.pruner.name!r} reached sparsity {achieved:.4f} on {job.architecture}, "
            f"requested {job.sparsity:.4f} (tolerance {tol:.4f}); it must neither prune less nor more."
        )
    meta = {"prune_seconds": prune_seconds, "finetune_seconds": ft_seconds, "achieved_sparsity": achieved}
    cache.save("pruned", job.pruned_key, model, meta)
    return model.eval(), meta | {"cached": False}


def cost_metrics(dense: nn.Module, model: nn.Module, data: ImageData, device: torch.device, latency: bool) -> list[Metric]:
    """Parameters, MACs, nonzeros, file size and latency of the model and its ratio to the dense one."""
    example = to_float(data.x_test[:1]).to(device)
    out: list[Metric] = []
    pairs = {
        "params": (count_params(model), count_params(dense)),
        "nonzero_params": (count_nonzero(model), count_nonzero(dense)),
        "macs": (count_macs(model, example), count_macs(dense, example)),
        "size_bytes": (file_size(model), file_size(dense)),
    }
    if latency:
        for b in (1, LATENCY_BATCH):
            pairs[f"latency_ms_b{b}"] = (latency_ms(model, example, b), latency_ms(dense, example, b))
    for name, (value, base) in pairs.items():
        out += [Metric(name, value), Metric(f"{name}_dense", base), Metric(f"{name}_ratio", value / base if base else float("nan"))]
    return out


def execute(job: JobSpec, data: ImageData, cache: ArtifactCache, device: torch.device, fresh: bool = False) -> tuple[list[Metric], dict[str, Any]]:
    """Run every stage of a job; returns its metrics and what it needs for provenance."""
    t0 = time.perf_counter()
    dense, dmeta = dense_model(job, data, cache, device, fresh)
    model, pmeta = pruned_model(job, data, dense, cache, device, fresh)
    metrics = [
        Metric("sparsity_requested", job.sparsity),
        Metric("sparsity_achieved", pmeta["achieved_sparsity"]),
        Metric("train_seconds", dmeta.get("train_seconds", 0.0)),
        Metric("prune_seconds", pmeta["prune_seconds"]),
        Metric("finetune_seconds", pmeta["finetune_seconds"]),
    ]
    if "dense_clean_accuracy" in dmeta:  # a given checkpoint's accuracy on the whole test split
        metrics.append(Metric("dense_clean_accuracy", dmeta["dense_clean_accuracy"]))
    metrics += cost_metrics(dense, model, data, device, job.eval.measure_latency)
    t = time.perf_counter()
    metrics += evaluate(model, data, job.eval, job.attacks, device, job.seed)
    metrics.append(Metric("eval_seconds", time.perf_counter() - t))
    metrics.append(Metric("job_seconds", time.perf_counter() - t0))
    plugins = {
        "dataset": datasets.get(job.dataset).as_dict(),
        "architecture": architectures.get(job.architecture).as_dict(),
        "pruner": pruners.get(job.pruner.name).as_dict(),
        "attacks": [attacks.get(a.name).as_dict() for a in job.attacks],
    }
    prov = {
        "plugins": plugins,
        "data": data.describe(),
        "dense_cached": dmeta.get("cached", False),
        "pruned_cached": pmeta.get("cached", False),
        "dense_key": job.dense_key,
        "pruned_key": job.pruned_key,
    }
    if "checkpoint" in dmeta:
        prov["dense_checkpoint"] = dmeta["checkpoint"]
    return metrics, prov
