"""Standard (non-adversarial) training and fine-tuning: SGD with momentum and a cosine schedule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import ImageData, augment_batch, batches, subset
from harness.grid import FinetuneConfig, TrainConfig


def train(
    model: nn.Module,
    data: ImageData,
    cfg: TrainConfig | FinetuneConfig,
    seed: int,
    device: torch.device,
    n_train: int | None = None,
) -> float:
    """Train `model` in place for cfg.epochs; returns the mean loss of the last epoch."""
    x, y = subset(data.x_train, data.y_train, n_train, seed=seed)
    if cfg.epochs <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed) if device.type == "cuda" else gen
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(y) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    last = torch.zeros((), device=device)
    for _ in range(cfg.epochs):
        total, count = torch.zeros((), device=device), 0
        for xb, yb in batches(x, y, cfg.batch_size, device, shuffle=True, generator=gen):
            if data.augment:
                xb = augment_batch(xb, aug_gen, flip=data.flip)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(yb)  # stays on device: no host sync per step
            count += len(yb)
        last = total / max(count, 1)
    model.eval()
    return float(last)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Per-example correctness (bool tensor on the CPU)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for xb, yb in batches(x, y, batch_size, device):
            out.append((model(xb).argmax(1) == yb).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)
