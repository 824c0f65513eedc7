"""Training and fine-tuning: SGD with momentum and a learning-rate schedule, on clean or adversarial examples."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.attack import project
from harness.api.config import SGDConfig, TrainConfig
from harness.api.data import ImageData, batches, subset
from harness.api.nets import frozen
from harness.attacks.pgd import pgd
from harness.training.augment import augment_batch
from harness.training.schedule import scheduler

# TRADES starts its inner maximisation this close to the clean image (Zhang et al. 2019, reference code).
TRADES_INIT_STD = 1e-3


def pgd_examples(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step_size: float, seed: int) -> Tensor:
    """Madry et al.'s inner maximisation with the harness's own `pgd_linf` attack (random start, one restart)."""
    # Training wants the last iterate for every example (Madry et al.), not the first one that fools the model.
    with frozen(model):
        return pgd(model, x, y, eps, "linf", steps, step_size, restarts=1, rand_init=True, seed=seed, early_stop=False).detach()


def trades_examples(model: nn.Module, x: Tensor, eps: float, steps: int, step_size: float, gen: torch.Generator) -> Tensor:
    """TRADES' inner maximisation: signed-gradient ascent on KL(f(x) || f(x')) inside the Linf ball."""
    with frozen(model):
        clean = F.softmax(model(x), dim=1)
        noise = torch.randn(x.shape, generator=gen).to(x.device)
        x_adv = (x + TRADES_INIT_STD * noise).clamp(0.0, 1.0)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), clean, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps, "linf")
    return x_adv.detach()


def adversarial_budget(cfg: TrainConfig, data: ImageData) -> tuple[float, float]:
    """(eps, step size) of the training attack: the dataset's Linf budget unless the config names one."""
    eps = float(cfg.adv_eps) if cfg.adv_eps is not None else data.eps_linf
    step = float(cfg.adv_step_size) if cfg.adv_step_size is not None else eps / 4
    return eps, step


def train(
    model: nn.Module,
    data: ImageData,
    cfg: SGDConfig,
    seed: int,
    device: torch.device,
    n_train: int | None = None,
) -> float:
    """Train `model` in place for cfg.epochs under cfg's regime; returns the mean training loss of the last epoch."""
    x, y = subset(data.x_train, data.y_train, n_train, seed=seed)
    if cfg.epochs <= 0:
        return float("nan")
    regime = getattr(cfg, "regime", "standard")  # fine-tuning configs carry no regime: clean images
    if regime != "standard":
        eps, step_size = adversarial_budget(cfg, data)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed) if device.type == "cuda" else gen
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(y) + cfg.batch_size - 1) // cfg.batch_size)
    sched = scheduler(opt, cfg, steps // cfg.epochs)
    model.train()
    last = torch.zeros((), device=device)
    step = 0
    for _ in range(cfg.epochs):
        total, count = torch.zeros((), device=device), 0
        for xb, yb in batches(x, y, cfg.batch_size, device, shuffle=True, generator=gen):
            if data.augment:
                xb = augment_batch(xb, aug_gen, flip=data.flip)
            if regime == "pgd_at":
                # A fresh random start per step, reproducible from the job's seed.
                x_adv = pgd_examples(model, xb, yb, eps, cfg.adv_steps, step_size, seed * 1_000_003 + step)  # type: ignore[union-attr]
                loss = F.cross_entropy(model(x_adv), yb)
            elif regime == "trades":
                x_adv = trades_examples(model, xb, eps, cfg.adv_steps, step_size, gen)  # type: ignore[union-attr]
                logits = model(xb)
                robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
                loss = F.cross_entropy(logits, yb) + cfg.trades_beta * robust  # type: ignore[union-attr]
            else:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(yb)  # stays on device: no host sync per step
            count += len(yb)
            step += 1
        last = total / max(count, 1)
    model.eval()
    return float(last)
