"""Clean and adversarial evaluation of one model: robust accuracy per attack and eps, the worst case, sanity flags.

The strength rule: the worst case over a threat model's attacks at an eps is reported as `worst_case_acc` only
when one of that threat model's reference attacks (EvalConfig.references(): AutoAttack for Linf, APGD or
AutoAttack for L2 by default) ran at that eps; otherwise it is `worst_case_acc_lower_strength`, a name that says
it is only as strong as the weaker attacks behind it. Examples a sanity check's stronger attack broke are folded
into the worst case.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.api.config import DEFAULT_REFERENCE, AttackSpec, EvalConfig
from harness.api.data import ImageData, subset, subset_indices
from harness.api.metrics import Metric, pack_outcomes
from harness.evaluation.runs import (
    BatchSize,
    Evaluation,
    accuracy,
    eval_batch_size,
    run_attacks,
)
from harness.evaluation.sanity import sanity_metrics

# The same test examples for every job and seed, so pruned, control and dense models are compared on paired data
# (per-example McNemar pairs); seed-to-seed variation then comes from training alone.
EVAL_SUBSET_SEED = 0
WORST = "worst_case_acc"
WORST_LOWER = "worst_case_acc_lower_strength"


def eval_subset(data: ImageData, cfg: EvalConfig) -> tuple[Tensor, Tensor]:
    """The fixed test subset that attacks run on."""
    return subset(data.x_test, data.y_test, cfg.n_examples, seed=EVAL_SUBSET_SEED)


def median_perturbation(sizes: Tensor) -> float:
    """Median perturbation size over the attacked examples (failures count as infinitely large)."""
    if len(sizes) == 0:
        return float("nan")
    # The lower median, so the figure is always one example's actual perturbation (or inf).
    return float(sizes.sort().values[(len(sizes) - 1) // 2])


def accuracy_metric(metric: str, mask: Tensor, attack: str = "", eps: float = -1.0) -> Metric:
    """An accuracy with the per-example outcomes behind it."""
    bits, n = pack_outcomes(mask)
    return Metric(metric, float(mask.float().mean()) if n else float("nan"), attack=attack, eps=eps, outcomes=bits, n_examples=n)


def worst_cases(ev: Evaluation, folds: dict[tuple[str, float], Tensor] | None = None) -> dict[tuple[str, float], Tensor]:
    """Per (threat model, eps): robust only if every attack, and every folded sanity attack, failed on the example."""
    worst: dict[tuple[str, float], Tensor] = {}
    for (name, eps), mask in ev.robust.items():
        key = (ev.threat[name], eps)
        worst[key] = mask.clone() if key not in worst else worst[key] & mask
    for key, mask in (folds or {}).items():
        if key in worst:
            worst[key] &= mask
    return worst


def metrics_of(
    ev: Evaluation,
    references: dict[str, tuple[str, ...]] | None = None,
    folds: dict[tuple[str, float], Tensor] | None = None,
) -> list[Metric]:
    """Robust accuracy per (attack, eps) and per stage, worst case per (threat model, eps), minimal perturbations."""
    references = DEFAULT_REFERENCE if references is None else references
    out = [accuracy_metric("clean_acc_eval", ev.clean_correct)]
    for (name, eps), mask in ev.robust.items():
        out.append(accuracy_metric("robust_acc", mask, name, eps))
    for (stage, eps), mask in ev.stages.items():
        out.append(Metric("robust_acc", float(mask.float().mean()), attack=stage, eps=eps))
    ran = {(ev.threat[n], e) for (n, e) in ev.robust if n in references.get(ev.threat[n], ())}
    for (tm, eps), mask in worst_cases(ev, folds).items():
        out.append(accuracy_metric(WORST if (tm, eps) in ran else WORST_LOWER, mask, tm, eps))
    for name, sizes in ev.perturbation.items():
        out.append(Metric("median_perturbation", median_perturbation(sizes), attack=name))
    for name, s in ev.seconds.items():
        out.append(Metric("attack_seconds", s, attack=name))
    return out


def evaluate(
    model: nn.Module, data: ImageData, cfg: EvalConfig, specs: tuple[AttackSpec, ...], device: torch.device, seed: int, progress: Path | None = None
) -> list[Metric]:
    """Clean accuracy on the whole test set, attacks and sanity checks on the fixed evaluation subset.

    One clean pass over the test set serves both clean accuracies; the subset goes to the device once. The batch
    size is the config's on the CPU and the whole subset on an accelerator, halved on out-of-memory; the one the
    job ended with is recorded as `eval_batch_size`. `progress` makes the attacks resumable (run_attacks); it is
    removed once the evaluation is complete.
    """
    x, y = eval_subset(data, cfg)
    bs = BatchSize(eval_batch_size(cfg.batch_size, len(y), device))
    model.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    try:
        clean = accuracy(model, data.x_test, data.y_test, device, bs)
        idx = subset_indices(len(data.y_test), cfg.n_examples, EVAL_SUBSET_SEED)
        ev = run_attacks(model, x, y, specs, device, bs, seed, clean_correct=clean if idx is None else clean[idx], progress=progress)
        flags, folds = sanity_metrics(model, x, y, ev, specs, replace(cfg, batch_size=bs.size), device, seed)
    finally:
        model.to(memory_format=torch.contiguous_format)  # checkpoints and later stages see the usual layout
    metrics = metrics_of(ev, cfg.references(), folds) + flags + [Metric("eval_batch_size", float(bs.size))]
    if ev.resumed_seconds:  # part of the evaluation ran in an earlier, interrupted session
        metrics.append(Metric("eval_resumed_seconds", ev.resumed_seconds))
    if progress is not None:
        progress.unlink(missing_ok=True)
    return [Metric("clean_acc", float(clean.float().mean()))] + metrics
