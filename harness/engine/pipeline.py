"""One job's stages: train dense (cached) -> prune -> fine-tune (cached) -> measure -> attack.

Every stage draws its images from the same training subset of the (dataset, seed), `training_subset`, so a pruned
model never sees images its dense model did not. Only the order differs by stage, from documented seeds: dense
training shuffles with `seed`, the fine-tuning after cut i with `seed + FINETUNE_SEED + i`, and calibration
batches are drawn with `seed + CALIBRATION_SEED`.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from torch import nn

from harness.api.config import MODEL_PROTOCOL, PROTOCOL_VERSION, JobSpec
from harness.api.data import ImageData, subset, to_float
from harness.api.errors import PruningError
from harness.api.metrics import Metric
from harness.api.nets import Normalized
from harness.api.plugins import architectures, attacks, datasets, pruners
from harness.api.pruner import PruneContext, Pruner
from harness.engine import published
from harness.engine.artifacts import ArtifactCache
from harness.engine.budget import finetune_epochs
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
from harness.training.train import train, training_subset

CALIBRATION_BATCHES = 4
# Shuffling seeds of the stages after dense training, as offsets from the job's seed (the data stays the same).
FINETUNE_SEED = 1000
CALIBRATION_SEED = 3000
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
    elif not fresh and (pub := published.find(job.dense_key)) is not None:  # trained by this project, committed
        model, meta = published.restore(job, data, device, pub)
    else:
        model = build_model(job, data, device)
        t0 = time.perf_counter()
        progress = cache.progress_path("dense", job.dense_key)
        if fresh:
            progress.unlink(missing_ok=True)
        run = train(model, data, job.train, job.seed, device, n_train=job.train.n_train, data_seed=job.seed, progress=progress)
        # A training resumed across sessions reports its whole wall time; its throughput is this call's.
        meta = {"train_seconds": time.perf_counter() - t0 + run.earlier_seconds, "train_loss": run.loss, "train_img_per_s": run.img_per_s,
                "params": job.dense_params()}
    cache.save("dense", job.dense_key, model, meta)
    return model.eval(), meta | {"cached": False}


def calibration(data: ImageData, job: JobSpec, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few seeded batches of the job's training subset for data-driven criteria."""
    bs = job.finetune.batch_size
    x, y = training_subset(data, job.train.n_train, job.seed)
    x, y = subset(x, y, CALIBRATION_BATCHES * bs, seed=job.seed + CALIBRATION_SEED)
    return [(to_float(x[i : i + bs]).to(device), y[i : i + bs].to(device)) for i in range(0, len(y), bs)]


def pruned_model(job: JobSpec, data: ImageData, dense: nn.Module, cache: ArtifactCache, device: torch.device, fresh: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of the dense model and fine-tune it; cached by the pruned key."""
    if job.pruner.name == "none":
        return dense, {"prune_seconds": 0.0, "finetune_seconds": 0.0, "achieved_sparsity": 0.0, "finetune_epochs": []}
    with cache.lock("pruned", job.pruned_key):
        return _pruned_model(job, data, dense, cache, device, fresh)


def _pruned_model(job: JobSpec, data: ImageData, dense: nn.Module, cache: ArtifactCache, device: torch.device, fresh: bool) -> tuple[nn.Module, dict[str, Any]]:
    hit = None if fresh else cache.load("pruned", job.pruned_key, device)
    if hit is not None:
        model, meta = hit
        return model.eval(), meta | {"cached": True}
    pruner = pruners.get(job.pruner.name).obj(**dict(job.pruner.params))
    model = copy.deepcopy(dense)
    budget = finetune_epochs(job.finetune.epochs, pruner.steps)
    done: list[int] = []  # epochs actually run after each cut
    ft_seconds = 0.0

    def fine_tune(m: nn.Module, step: int) -> None:
        nonlocal ft_seconds
        t = time.perf_counter()
        epochs = budget[step] if step < len(budget) - 1 else 0  # the last cut's share runs after prune() returns
        finetune_stage(m, job, data, device, epochs, step)
        done.append(epochs)
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
    sparsity = matched_sparsity(job, dense, ctx, data, device) if job.match == "macs" else job.sparsity
    model = pruner.prune(model, sparsity, ctx)
    prune_seconds = time.perf_counter() - t0 - ft_seconds
    t = time.perf_counter()
    # Whatever the schedule called, the total is the one-shot budget and the last cut is always fine-tuned.
    last = job.finetune.epochs - sum(done)
    finetune_stage(model, job, data, device, last, len(done))
    done.append(last)
    ft_seconds += time.perf_counter() - t
    model = pruner.finalize(model).eval()
    achieved = check_sparsity(job, pruner, dense, model, sparsity)
    meta = {"prune_seconds": prune_seconds, "finetune_seconds": ft_seconds, "achieved_sparsity": achieved, "finetune_epochs": done, "sparsity": sparsity}
    cache.save("pruned", job.pruned_key, model, meta)
    return model.eval(), meta | {"cached": False}


def finetune_stage(model: nn.Module, job: JobSpec, data: ImageData, device: torch.device, epochs: int, step: int) -> None:
    """Fine-tune for `epochs` on the job's training subset, shuffled by the cut's own seed."""
    if epochs <= 0:
        return
    cfg = type(job.finetune)(**{**job.finetune.__dict__, "epochs": epochs})
    train(model, data, cfg, job.seed + FINETUNE_SEED + step, device, n_train=job.train.n_train, data_seed=job.seed)


def check_sparsity(job: JobSpec, pruner: Pruner, dense: nn.Module, model: nn.Module, requested: float | None = None) -> float:
    """The achieved sparsity, measured by harness code; raises when it misses the request beyond rounding."""
    requested = job.sparsity if requested is None else requested
    # Measured by harness code, never by a method a submitted file could override.
    trusted = trusted_class(type(pruner))
    achieved = trusted.achieved_sparsity(pruner, dense, model)
    tol = trusted.tolerance(pruner, dense)
    if abs(achieved - requested) > tol + 1e-9:
        raise PruningError(
            f"pruner {job.pruner.name!r} reached sparsity {achieved:.4f} on {job.architecture}, "
            f"requested {requested:.4f} (tolerance {tol:.4f}); it must neither prune less nor more "
            "(structured pruners keep at least one filter or block per layer: lower the sparsity)."
        )
    return achieved


MATCH_TOLERANCE = 0.02  # relative: the MACs ratio reached must be within 2% of the target
MATCH_ITERATIONS = 14
MATCH_MAX_SPARSITY = 0.95


def matched_sparsity(job: JobSpec, dense: nn.Module, ctx: PruneContext, data: ImageData, device: torch.device) -> float:
    """The pruner's own sparsity whose pruned model keeps (1 - job.sparsity) of the dense MACs, within 2%.

    Bisection over the sparsity, pruning copies of the dense model with the job's pruner (the schedule's cuts, no
    fine-tuning between them) and measuring their MACs; MACs fall monotonically as more is pruned.
    """
    target = 1.0 - job.sparsity
    example = to_float(data.x_test[:1]).to(device)
    base = count_macs(dense, example)
    probe = PruneContext(ctx.example_inputs, ctx.calibration, ctx.seed, ctx.device, fine_tune=None, memo=ctx.memo)

    def ratio(s: float) -> float:
        pruner = pruners.get(job.pruner.name).obj(**dict(job.pruner.params))
        try:
            model = pruner.finalize(pruner.prune(copy.deepcopy(dense).eval(), s, probe))
        except PruningError:
            return 0.0  # cannot prune that far: treat as past the target
        return count_macs(model, example) / base

    lo, hi = 0.0, MATCH_MAX_SPARSITY
    best = (math.inf, 0.0, 1.0)
    for _ in range(MATCH_ITERATIONS):
        mid = (lo + hi) / 2
        r = ratio(mid)
        best = min(best, (abs(r / target - 1), mid, r))
        if best[0] <= MATCH_TOLERANCE:
            return best[1]
        lo, hi = (mid, hi) if r > target else (lo, mid)
    raise PruningError(
        f"pruner {job.pruner.name!r} cannot keep {target:.2f}x MACs of {job.architecture} within {MATCH_TOLERANCE:.0%}: "
        f"closest {best[2]:.3f}x at sparsity {best[1]:.3f} (its unit is too coarse); choose another target."
    )


def cost_metrics(dense: nn.Module, model: nn.Module, data: ImageData, device: torch.device, latency: bool) -> list[Metric]:
    """Parameters, MACs, nonzeros, file size and latency of the model and its ratio to the dense one."""
    example = to_float(data.x_test[:1]).to(device)
    out: list[Metric] = []
    pairs: dict[str, tuple[float, float]] = {
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
        Metric("sparsity_pruned", pmeta.get("sparsity", job.sparsity)),  # the pruner's own sparsity (differs under match)
        Metric("sparsity_achieved", pmeta["achieved_sparsity"]),
        Metric("train_seconds", dmeta.get("train_seconds", 0.0)),
        Metric("prune_seconds", pmeta["prune_seconds"]),
        Metric("finetune_seconds", pmeta["finetune_seconds"]),
    ]
    if "train_img_per_s" in dmeta:  # absent from dense checkpoints cached before it was measured
        metrics.append(Metric("train_img_per_s", dmeta["train_img_per_s"]))
    if "dense_clean_accuracy" in dmeta:  # a given checkpoint's accuracy on the whole test split
        metrics.append(Metric("dense_clean_accuracy", dmeta["dense_clean_accuracy"]))
    metrics += cost_metrics(dense, model, data, device, job.eval.measure_latency)
    t = time.perf_counter()
    progress = cache.progress_path("eval", job.key)
    if fresh:  # recompute everything, interrupted attacks included
        progress.unlink(missing_ok=True)
    metrics += evaluate(model, data, job.eval, job.attacks, device, job.seed, progress=progress)
    # A resumed evaluation counts the attacks an interrupted session finished, as its attack_seconds do.
    resumed = sum(m.value for m in metrics if m.metric == "eval_resumed_seconds")
    metrics.append(Metric("eval_seconds", time.perf_counter() - t + resumed))
    metrics.append(Metric("job_seconds", time.perf_counter() - t0 + resumed))
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
        "protocol": PROTOCOL_VERSION,
        "model_protocol": MODEL_PROTOCOL,
        "finetune_epochs": pmeta.get("finetune_epochs", []),
    }
    if "checkpoint" in dmeta:
        prov["dense_checkpoint"] = dmeta["checkpoint"]
    return metrics, prov
