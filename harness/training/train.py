"""Training and fine-tuning: SGD with momentum and a learning-rate schedule, on clean or adversarial examples.

The loop is built to keep an accelerator busy: the (uint8) training images go to the device once per call,
shuffling, augmentation and conversion happen there, bf16 autocast where the config (or the device) asks for
it, and NHWC memory layout where the network has no grouped convolutions. Every random draw comes from one
generator that lives on the run's device (`run_generator`), so the same seed on the same device gives the
same model.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.attack import project
from harness.api.config import SGDConfig, TrainConfig, resolve_precision
from harness.api.data import ImageData, subset, to_float
from harness.api.files import atomic_write
from harness.api.nets import frozen
from harness.api.progress import load_progress
from harness.attacks.pgd import pgd
from harness.training.augment import augment_batch
from harness.training.schedule import scheduler

# TRADES starts its inner maximisation this close to the clean image (Zhang et al. 2019, reference code).
TRADES_INIT_STD = 1e-3


@dataclass(frozen=True)
class TrainResult:
    """What a training call reports: the last epoch's mean loss and its throughput."""

    loss: float
    images: int  # images through a training step, all epochs
    seconds: float  # wall time of the whole call, data transfer and final synchronisation included
    earlier_seconds: float = 0.0  # wall time of the interrupted calls this one resumed (from the progress file)

    @property
    def img_per_s(self) -> float:
        """Training throughput of the call."""
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def run_generator(device: torch.device, seed: int) -> torch.Generator:
    """The one generator a training run draws from (shuffling, augmentation, TRADES noise): on the run's device."""
    return torch.Generator(device=device).manual_seed(seed)


def uses_channels_last(model: nn.Module, device: torch.device, precision: str = "fp32") -> bool:
    """NHWC on CUDA and for bf16 on the CPU, except for nets with grouped or depthwise convolutions.

    Depthwise convolutions (MobileNetV2) ran 2.4x slower in NHWC + bf16 than NCHW on an H100. On the CPU, bf16
    in NHWC trained ResNet-20 2.0-2.2x faster than fp32 in NCHW (benchmarks/training.py --precisions); fp32 stays
    NCHW there, so CPU fp32 numbers stay identical to earlier releases (a layout changes them by rounding).
    """
    if device.type != "cuda" and precision != "bf16":
        return False
    return not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())


def cudnn_autotune() -> bool:
    """Whether to let cuDNN time its kernels (HARNESS_CUDNN_BENCHMARK=1): faster, reproducible only to rounding."""
    return os.environ.get("HARNESS_CUDNN_BENCHMARK", "0") == "1"


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """bf16 autocast for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def pgd_examples(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step_size: float, seed: int) -> Tensor:
    """Madry et al.'s inner maximisation with the harness's own `pgd_linf` attack (random start, one restart)."""
    # Training wants the last iterate for every example (Madry et al.), not the first one that fools the model.
    with frozen(model):
        return pgd(model, x, y, eps, "linf", steps, step_size, restarts=1, rand_init=True, seed=seed, early_stop=False).detach()


def trades_examples(model: nn.Module, x: Tensor, eps: float, steps: int, step_size: float, gen: torch.Generator) -> Tensor:
    """TRADES' inner maximisation: signed-gradient ascent on KL(f(x) || f(x')) inside the Linf ball."""
    with frozen(model):
        clean = F.softmax(model(x), dim=1)
        noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_subset(data: ImageData, n_train: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """The training images of a (dataset, seed): every stage (dense, fine-tuning, calibration) draws from these."""
    return subset(data.x_train, data.y_train, n_train, seed=seed)


def _fingerprint(cfg: SGDConfig, seed: int, data_seed: int | None, n: int, model: nn.Module) -> dict[str, Any]:
    """What a saved epoch must match to be resumed: the settings, the seeds, the data size and the network's shapes."""
    shapes = [list(v.shape) for v in model.state_dict().values()]
    return {"cfg": asdict(cfg), "seed": seed, "data_seed": data_seed, "n": n, "shapes": shapes}


def train(
    model: nn.Module,
    data: ImageData,
    cfg: SGDConfig,
    seed: int,
    device: torch.device,
    n_train: int | None = None,
    data_seed: int | None = None,
    progress: Path | None = None,
) -> TrainResult:
    """Train `model` in place for cfg.epochs under cfg's regime; returns the last epoch's mean loss and throughput.

    `seed` drives shuffling, augmentation and adversarial starts; `data_seed` (default `seed`) picks the subset.
    With `progress`, the full state (weights, optimiser, schedule, generator) is saved there after every epoch,
    and a later call with the same settings resumes from it, giving the same model as an uninterrupted run: a
    multi-hour run survives the end of its session. The file is removed when training completes.
    """
    t0 = time.perf_counter()
    x, y = training_subset(data, n_train, seed if data_seed is None else data_seed)
    if cfg.epochs <= 0:
        return TrainResult(float("nan"), 0, 0.0)
    regime = getattr(cfg, "regime", "standard")  # fine-tuning configs carry no regime: clean images
    adv = cast(TrainConfig, cfg)  # read only under an adversarial regime, which only a TrainConfig has
    if regime != "standard":
        eps, step_size = adversarial_budget(adv, data)
    precision = resolve_precision(cfg.precision, device.type)
    gen = run_generator(device, seed)
    # Once per call: stored dtype (uint8 for image datasets: 150 MB for CIFAR-10), converted per batch on the device.
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    layout = torch.channels_last if uses_channels_last(model, device, precision) else torch.contiguous_format
    if device.type == "cuda":
        # Deterministic kernels, chosen by cuDNN's heuristics: same seed, same card => same numbers in every run.
        # Autotuning (opt-in) may pick another kernel in another process, which changes results by rounding.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = cudnn_autotune()
    model.to(memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n, bs = len(y), cfg.batch_size
    steps = cfg.epochs * ((n + bs - 1) // bs)
    sched = scheduler(opt, cfg, steps // cfg.epochs)
    model.train()
    last = torch.zeros((), device=device)
    step = start = 0
    earlier = 0.0
    fingerprint = _fingerprint(cfg, seed, data_seed, n, model) if progress is not None else {}
    saved = load_progress(progress, fingerprint, device)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        gen.set_state(saved["gen"].cpu())  # a generator's state is a CPU byte tensor, whatever its device
        start, step, last = saved["epoch"], saved["step"], saved["last"].to(device)
        earlier = float(saved.get("seconds", 0.0))  # progress files written before this field count nothing
    for epoch in range(start, cfg.epochs):
        total = torch.zeros((), device=device)
        order = torch.randperm(n, generator=gen, device=gen.device).to(device)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            xb, yb = x[idx], y[idx]
            if data.augment:
                xb = augment_batch(xb, gen, flip=data.flip)
            xb = to_float(xb).contiguous(memory_format=layout)
            with autocast(device, precision):
                if regime == "pgd_at":
                    # A fresh random start per step, reproducible from the job's seed.
                    x_adv = pgd_examples(model, xb, yb, eps, adv.adv_steps, step_size, seed * 1_000_003 + step)
                    loss = F.cross_entropy(model(x_adv), yb)
                elif regime == "trades":
                    x_adv = trades_examples(model, xb, eps, adv.adv_steps, step_size, gen)
                    logits = model(xb)
                    robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
                    loss = F.cross_entropy(logits, yb) + adv.trades_beta * robust
                else:
                    loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach().float() * len(yb)  # stays on device: no host sync per step
            step += 1
        last = total / n
        if progress is not None and epoch + 1 < cfg.epochs:
            state = {"fingerprint": fingerprint, "epoch": epoch + 1, "step": step, "last": last, "model": model.state_dict(),
                     "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(),
                     "seconds": earlier + time.perf_counter() - t0}
            atomic_write(progress, partial(torch.save, state))
    model.to(memory_format=torch.contiguous_format)  # pruners, attacks and checkpoints see the usual layout
    model.eval()
    loss_value = float(last)  # synchronises with the device
    _sync(device)
    if progress is not None:
        progress.unlink(missing_ok=True)
    return TrainResult(loss_value, (cfg.epochs - start) * n, time.perf_counter() - t0, earlier)
