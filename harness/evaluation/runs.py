"""Running attacks over a model's evaluation examples: per-example outcomes, batch by batch, inside the eps-ball.

The data flow is built for an accelerator: the evaluation subset is copied to the device once per job, the clean
pass runs once, each attack's ball check is one reduction read once per (attack, eps), and a batch that runs out
of memory is retried at half the size (down to 1) before the job fails.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from harness.api.attack import Attack, MinimalAttack, norms, project
from harness.api.config import AttackSpec
from harness.api.data import to_float
from harness.api.errors import AttackError, HarnessError
from harness.api.files import atomic_write
from harness.api.nets import frozen
from harness.api.plugins import attacks
from harness.api.progress import load_progress

# Slack for float rounding when checking that an attack stayed inside its eps-ball.
BALL_SLACK = 1e-5


@dataclass
class Evaluation:
    """Per-example outcomes (bool, CPU, one entry per eval example), kept so worst cases and sanity checks can combine attacks."""

    clean_correct: Tensor
    robust: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    # Multi-stage attacks (AutoAttack): who was still correct after each stage, keyed ("autoattack/apgd-ce", eps).
    stages: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    # Minimal-perturbation attacks: per-example size of the perturbation found (inf where the attack failed).
    perturbation: dict[str, Tensor] = field(default_factory=dict)
    threat: dict[str, str] = field(default_factory=dict)
    white_box: dict[str, bool] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    resumed_seconds: float = 0.0  # attack time spent by an earlier, interrupted call and restored from its progress file
    # The eval batch size the job ended with (smaller than configured after an out-of-memory retry).
    batch_size: int = 0


T = TypeVar("T")
# The eval batch on an accelerator when the config's is smaller: the whole subset up to this many images (an OOM
# halves it). The CPU keeps the config's batch size: bigger batches do not run faster there.
ACCELERATOR_BATCH = 4096


class EvaluationError(HarnessError):
    """An evaluation that cannot run, even one example at a time."""


@dataclass
class BatchSize:
    """The eval batch size of one job: halved on out-of-memory and kept halved for the rest of the job."""

    size: int

    def __post_init__(self) -> None:
        self.size = max(int(self.size), 1)


def eval_batch_size(configured: int, n: int, device: torch.device) -> int:
    """The batch size evaluation starts from: the config's on the CPU, the whole subset (capped) on an accelerator."""
    return configured if device.type == "cpu" else max(configured, min(max(n, 1), ACCELERATOR_BATCH))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation failure: CUDA out of memory, or the CPU allocator giving up."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def over_batches(n: int, bs: BatchSize, fn: Callable[[int, int], T]) -> list[T]:
    """fn(lo, hi) over [0, n) in slices of `bs.size`; a slice that runs out of memory is retried at half the size."""
    out: list[T] = []
    lo = 0
    while lo < n:
        hi = min(lo + bs.size, n)
        try:
            out.append(fn(lo, hi))
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            if bs.size == 1:
                raise EvaluationError(f"evaluation ran out of memory even one example at a time: {err}") from err
            bs.size = max(bs.size // 2, 1)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        lo = hi
    return out


def _as_batch(batch_size: int | BatchSize) -> BatchSize:
    return batch_size if isinstance(batch_size, BatchSize) else BatchSize(batch_size)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int | BatchSize = 512) -> torch.Tensor:
    """Per-example correctness (bool tensor on the CPU)."""
    model.eval()
    bs = _as_batch(batch_size)

    def one(lo: int, hi: int) -> Tensor:
        with torch.inference_mode():
            return model(to_float(x[lo:hi]).to(device)).argmax(1) == y[lo:hi].to(device)

    out = over_batches(len(y), bs, one)
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.bool)


def build_attack(spec: AttackSpec, seed: int) -> Attack:
    """The attack a grid entry names, with its parameters and the job's seed."""
    cls = attacks.get(spec.name).obj
    params = dict(spec.params)
    if "seed" in inspect.signature(cls).parameters:
        params.setdefault("seed", seed)
    return cls(**params)


def ball_stats(x_adv: Tensor, x: Tensor, threat_model: str) -> Tensor:
    """On the device: (-min pixel, max pixel, largest perturbation), the three numbers the ball check needs."""
    return torch.stack([-x_adv.min(), x_adv.max(), norms(x_adv - x, threat_model).max()])


def raise_outside(stats: Tensor, eps: float, threat_model: str, name: str) -> None:
    """Refuse an attack whose `ball_stats` (maximised over batches) leave the ball or the [0, 1] box: one host read."""
    neg_min, top, size = stats.tolist()
    if neg_min > BALL_SLACK or top > 1 + BALL_SLACK:
        raise AttackError(f"attack {name!r} left the [0, 1] pixel range")
    if size > eps * (1 + BALL_SLACK) + BALL_SLACK:
        raise AttackError(f"attack {name!r} exceeded its {threat_model} budget eps={eps:g} (max {size:.4g})")


def _check_shape(x_adv: Tensor, x: Tensor, name: str) -> None:
    if x_adv.shape != x.shape:
        raise AttackError(f"attack {name!r} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")


def check_in_ball(x_adv: Tensor, x: Tensor, eps: float, threat_model: str, name: str) -> None:
    """Refuse an attack output outside the threat model's ball or the [0, 1] box."""
    _check_shape(x_adv, x, name)
    if len(x):
        raise_outside(ball_stats(x_adv, x, threat_model), eps, threat_model, name)


def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(x).argmax(1) == y


def _max_stats(per_batch: list[Tensor]) -> Tensor | None:
    return torch.stack(per_batch).amax(0) if per_batch else None


def attack_correct(
    attack: Attack, name: str, model: nn.Module, x: Tensor, y: Tensor, eps: float, device: torch.device, batch_size: int | BatchSize
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-example correctness (CPU) under a bounded attack, and after each stage of a multi-stage one.

    `x` and `y` may already be on `device` (then no copy is made). A multi-stage attack's example counts as robust
    only if its own last check and the re-check here both say so: the two run in different batches, and rounding
    must not turn an example it fooled into a robust one.
    """

    def one(lo: int, hi: int) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        xb, yb = to_float(x[lo:hi]).to(device), y[lo:hi].to(device)
        x_adv, trace = attack.perturb_traced(model, xb, yb, eps)
        x_adv = x_adv.detach()
        _check_shape(x_adv, xb, name)
        correct = _correct(model, x_adv, yb)
        if trace:
            correct = correct & list(trace.values())[-1].to(device)
        return correct, trace, ball_stats(x_adv, xb, attack.threat_model)

    parts = over_batches(len(y), _as_batch(batch_size), one)
    stats = _max_stats([p[2] for p in parts])
    if stats is not None:
        raise_outside(stats, eps, attack.threat_model, name)
    empty = torch.zeros(0, dtype=torch.bool)
    stages = {k: torch.cat([p[1][k] for p in parts]).cpu() for k in (parts[0][1] if parts else {})}
    return (torch.cat([p[0] for p in parts]).cpu() if parts else empty), stages


def minimal_correct(
    attack: MinimalAttack, name: str, model: nn.Module, x: Tensor, y: Tensor, eps_list: tuple[float, ...], device: torch.device,
    batch_size: int | BatchSize,
) -> tuple[dict[float, Tensor], Tensor]:
    """One run of a minimal-perturbation attack: correctness at each eps (its example projected to the ball) and sizes."""

    def one(lo: int, hi: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        xb, yb = to_float(x[lo:hi]).to(device), y[lo:hi].to(device)
        x_min = attack.minimal(model, xb, yb).detach()
        _check_shape(x_min, xb, name)
        stats = [ball_stats(x_min, xb, attack.threat_model)]
        size = torch.where(_correct(model, x_min, yb), float("inf"), norms(x_min - xb, attack.threat_model))
        correct = []
        for eps in eps_list:
            x_eps = project(x_min, xb, eps, attack.threat_model)
            stats.append(ball_stats(x_eps, xb, attack.threat_model))
            correct.append(_correct(model, x_eps, yb))
        return size, correct, stats

    parts = over_batches(len(y), _as_batch(batch_size), one)
    if parts:
        stats = torch.stack([torch.stack(p[2]) for p in parts]).amax(0).cpu()  # one host read for every eps
        raise_outside(stats[0], float("inf"), attack.threat_model, name)
        for j, eps in enumerate(eps_list):
            raise_outside(stats[j + 1], eps, attack.threat_model, name)
    empty = torch.zeros(0, dtype=torch.bool)
    by_eps = {e: torch.cat([p[1][j] for p in parts]).cpu() if parts else empty for j, e in enumerate(eps_list)}
    return by_eps, torch.cat([p[0] for p in parts]).cpu() if parts else torch.zeros(0)


def _scatter(n: int, idx: Tensor, values: Tensor, fill: float | bool = False) -> Tensor:
    """A length-n vector holding `values` at `idx` and `fill` elsewhere."""
    out = torch.full((n,), fill, dtype=values.dtype)
    out[idx] = values
    return out


def run_attacks(
    model: nn.Module, x: Tensor, y: Tensor, specs: tuple[AttackSpec, ...], device: torch.device, batch_size: int | BatchSize, seed: int,
    clean_correct: Tensor | None = None, progress: Path | None = None,
) -> Evaluation:
    """Clean correctness and, for each attack and eps, which examples stay correctly classified.

    The subset goes to the device once; `clean_correct` (per example, from a clean pass already run) skips the
    clean pass here. The batch size actually used ends up in `Evaluation.batch_size`. With `progress`, the
    outcomes are saved there after every (attack, eps), and a later call on the same model, subset and attacks
    skips what is saved: an hour of AutoAttack survives the end of a session. Every attack seeds its own
    generators per call, so the skipped entries do not change the others.
    """
    bs = _as_batch(batch_size)
    with frozen(model):
        xd, yd = to_float(x).to(device), y.to(device)
        ev = Evaluation(clean_correct=clean_correct.cpu() if clean_correct is not None else accuracy(model, xd, yd, device, bs))
        fingerprint = {"specs": [s.as_dict() for s in specs], "seed": seed, "clean": ev.clean_correct.tolist()}
        saved = load_progress(progress, fingerprint) or {}
        ev.robust, ev.stages = dict(saved.get("robust", {})), dict(saved.get("stages", {}))
        ev.perturbation, ev.seconds = dict(saved.get("perturbation", {})), dict(saved.get("seconds", {}))
        ev.resumed_seconds = sum(ev.seconds.values())

        def save() -> None:
            if progress is not None:
                state = {"fingerprint": fingerprint, "robust": ev.robust, "stages": ev.stages, "perturbation": ev.perturbation, "seconds": ev.seconds}
                atomic_write(progress, lambda fh: torch.save(state, fh))

        # As in AutoAttack, clean-misclassified examples are not attacked: they count as non-robust.
        idx = ev.clean_correct.nonzero().squeeze(1)
        on_device = idx.to(device)
        xa, ya, n = xd[on_device], yd[on_device], len(y)
        for spec in specs:
            attack = build_attack(spec, seed)
            name = spec.name
            ev.threat[name], ev.white_box[name], ev.params[name] = attack.threat_model, attack.white_box, dict(spec.params)
            t0 = time.perf_counter()
            if isinstance(attack, MinimalAttack):
                if name not in ev.perturbation:
                    by_eps, sizes = minimal_correct(attack, name, model, xa, ya, spec.eps, device, bs)
                    ev.perturbation[name] = sizes
                    for eps, m in by_eps.items():
                        ev.robust[(name, eps)] = _scatter(n, idx, m)
                    ev.seconds[name] = time.perf_counter() - t0
                    save()
            else:
                for eps in spec.eps:
                    if (name, eps) in ev.robust:
                        continue
                    t1 = time.perf_counter()
                    m, stages = attack_correct(attack, name, model, xa, ya, eps, device, bs)
                    ev.robust[(name, eps)] = _scatter(n, idx, m)
                    for stage, sm in stages.items():
                        ev.stages[(f"{name}/{stage}", eps)] = _scatter(n, idx, sm)
                    ev.seconds[name] = ev.seconds.get(name, 0.0) + time.perf_counter() - t1
                    save()
    ev.batch_size = bs.size
    return ev
