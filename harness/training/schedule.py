"""Learning-rate schedules per optimiser step: cosine (the default), warm-up plus cosine, and one-cycle."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
)

from harness.api.config import SGDConfig

# One-cycle's start and end learning rates relative to the peak (Smith & Topin 2019; torch's OneCycleLR defaults).
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_DEFAULT_RISE = 0.3  # fraction of the steps spent rising when warmup_epochs is 0


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Factor on the base lr: linear from 1/warmup to 1 over `warmup` steps, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def scheduler(opt: torch.optim.Optimizer, cfg: SGDConfig, steps_per_epoch: int) -> LRScheduler:
    """The schedule `cfg` names, stepped once per batch over cfg.epochs."""
    total = cfg.epochs * steps_per_epoch
    # Capped below the run's length: an iterative pruner's fine-tuning rounds are shorter than the configured run.
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    if cfg.schedule == "onecycle":
        rise = warmup / total if warmup else ONECYCLE_DEFAULT_RISE
        # Momentum stays at cfg.momentum: the config's value means what it says.
        return OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=min(rise, 0.99), anneal_strategy="cos",
                          cycle_momentum=False, div_factor=ONECYCLE_DIV, final_div_factor=ONECYCLE_FINAL_DIV)
    if warmup == 0:
        # Today's schedule, kept as the same torch object so that existing grids reproduce bit for bit.
        return CosineAnnealingLR(opt, T_max=total)
    return LambdaLR(opt, lambda step: warmup_cosine(step, warmup, total))
