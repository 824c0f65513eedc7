"""Clean and adversarial evaluation of one model: robust accuracy per attack and eps, the worst case, sanity flags."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from harness.api.config import AttackSpec, EvalConfig
from harness.api.data import ImageData, subset, subset_indices
from harness.api.metrics import Metric
from harness.evaluation.runs import (
    BatchSize,
    Evaluation,
    accuracy,
    eval_batch_size,
    run_attacks,
)
from harness.evaluation.sanity import sanity_metrics

# The same test examples for every job, so pruned and dense models are compared on paired data.
EVAL_SUBSET_SEED = 0


def eval_subset(data: ImageData, cfg: EvalConfig) -> tuple[Tensor, Tensor]:
    """The fixed test subset that attacks run on."""
    return subset(data.x_test, data.y_test, cfg.n_examples, seed=EVAL_SUBSET_SEED)


def median_perturbation(sizes: Tensor) -> float:
    """Median perturbation size over the attacked examples (failures count as infinitely large)."""
    if len(sizes) == 0:
        return float("nan")
    # The lower median, so the figure is always one example's actual perturbation (or inf).
    return float(sizes.sort().values[(len(sizes) - 1) // 2])


def metrics_of(ev: Evaluation) -> list[Metric]:
    """Robust accuracy per (attack, eps) and per stage, worst case per (threat model, eps), minimal perturbations."""
    out = [Metric("clean_acc_eval", float(ev.clean_correct.float().mean()))]
    worst: dict[tuple[str, float], Tensor] = {}
    for (name, eps), mask in ev.robust.items():
        out.append(Metric("robust_acc", float(mask.float().mean()), attack=name, eps=eps))
        key = (ev.threat[name], eps)
        # Per-example minimum over attacks: robust only if every attack failed on it.
        worst[key] = mask.clone() if key not in worst else worst[key] & mask
    for (stage, eps), mask in ev.stages.items():
        out.append(Metric("robust_acc", float(mask.float().mean()), attack=stage, eps=eps))
    for (tm, eps), mask in worst.items():
        out.append(Metric("worst_case_acc", float(mask.float().mean()), attack=tm, eps=eps))
    for name, sizes in ev.perturbation.items():
        out.append(Metric("median_perturbation", median_perturbation(sizes), attack=name))
    for name, s in ev.seconds.items():
        out.append(Metric("attack_seconds", s, attack=name))
    return out


def evaluate(model: nn.Module, data: ImageData, cfg: EvalConfig, specs: tuple[AttackSpec, ...], device: torch.device, seed: int) -> list[Metric]:
    """Clean accuracy on the whole test set, attacks and sanity checks on the fixed evaluation subset.

    One clean pass over the test set serves both clean accuracies; the subset goes to the device once. The batch
    size is the config's on the CPU and the whole subset on an accelerator, halved on out-of-memory; the one the
    job ended with is recorded as `eval_batch_size`.
    """
    x, y = eval_subset(data, cfg)
    bs = BatchSize(eval_batch_size(cfg.batch_size, len(y), device))
    clean = accuracy(model, data.x_test, data.y_test, device, bs)
    idx = subset_indices(len(data.y_test), cfg.n_examples, EVAL_SUBSET_SEED)
    ev = run_attacks(model, x, y, specs, device, bs, seed, clean_correct=clean if idx is None else clean[idx])
    flags = sanity_metrics(model, x, y, ev, specs, replace(cfg, batch_size=bs.size), device, seed)
    return [Metric("clean_acc", float(clean.float().mean()))] + metrics_of(ev) + flags + [Metric("eval_batch_size", float(bs.size))]
