"""Clean and adversarial evaluation of one model: robust accuracy per attack and eps, and the worst case."""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.attacks import Attack
from harness.data import ImageData, subset, to_float
from harness.errors import AttackError
from harness.grid import AttackSpec, EvalConfig
from harness.plugins import attacks
from harness.store.session import Metric
from harness.train import accuracy

# Slack for float rounding when checking that an attack stayed inside its eps-ball.
BALL_SLACK = 1e-5
# The same test examples for every job, so pruned and dense models are compared on paired data.
EVAL_SUBSET_SEED = 0


@dataclass
class Evaluation:
    """Per-example outcomes, kept so worst cases and sanity checks can combine attacks."""

    clean_correct: Tensor
    robust: dict[tuple[str, float], Tensor] = field(default_factory=dict)
    threat: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def eval_subset(data: ImageData, cfg: EvalConfig) -> tuple[Tensor, Tensor]:
    """The fixed test subset that attacks run on."""
    return subset(data.x_test, data.y_test, cfg.n_examples, seed=EVAL_SUBSET_SEED)


def check_in_ball(x_adv: Tensor, x: Tensor, eps: float, threat_model: str, name: str) -> None:
    """Refuse an attack output outside the threat model's ball or the [0, 1] box."""
    if x_adv.shape != x.shape:
        raise AttackError(f"attack {name!r} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if x_adv.min() < -BALL_SLACK or x_adv.max() > 1 + BALL_SLACK:
        raise AttackError(f"attack {name!r} left the [0, 1] pixel range")
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if threat_model == "linf" else d.norm(dim=1)
    if (size > eps * (1 + BALL_SLACK) + BALL_SLACK).any():
        raise AttackError(f"attack {name!r} exceeded its {threat_model} budget eps={eps:g} (max {size.max():.4g})")


def run_attacks(model: nn.Module, x: Tensor, y: Tensor, specs: tuple[AttackSpec, ...], device: torch.device, batch_size: int, seed: int) -> Evaluation:
    """Clean correctness and, for each attack and eps, which examples stay correctly classified."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # attacks need input gradients only
    ev = Evaluation(clean_correct=accuracy(model, x, y, device, batch_size))
    for spec in specs:
        cls = attacks.get(spec.name).obj
        params = dict(spec.params)
        if "seed" in inspect.signature(cls).parameters:
            params.setdefault("seed", seed)
        attack: Attack = cls(**params)
        ev.threat[spec.name] = attack.threat_model
        t0 = time.perf_counter()
        for eps in spec.eps:
            masks = []
            for i in range(0, len(y), batch_size):
                xb, yb = to_float(x[i : i + batch_size]).to(device), y[i : i + batch_size].to(device)
                x_adv = attack.perturb(model, xb, yb, eps).detach()
                check_in_ball(x_adv, xb, eps, attack.threat_model, spec.name)
                with torch.inference_mode():
                    masks.append((model(x_adv).argmax(1) == yb).cpu())
            # An example is robust only if it is classified correctly both clean and attacked.
            ev.robust[(spec.name, eps)] = torch.cat(masks) & ev.clean_correct
        ev.seconds[spec.name] = time.perf_counter() - t0
    for p in model.parameters():
        p.requires_grad_(True)
    return ev


def metrics_of(ev: Evaluation) -> list[Metric]:
    """Robust accuracy per (attack, eps) and worst case per (threat model, eps): the per-example minimum."""
    out = [Metric("clean_acc_eval", float(ev.clean_correct.float().mean()))]
    worst: dict[tuple[str, float], Tensor] = {}
    for (name, eps), mask in ev.robust.items():
        out.append(Metric("robust_acc", float(mask.float().mean()), attack=name, eps=eps))
        key = (ev.threat[name], eps)
        worst[key] = mask.clone() if key not in worst else worst[key] & mask
    for (tm, eps), mask in worst.items():
        out.append(Metric("worst_case_acc", float(mask.float().mean()), attack=tm, eps=eps))
    for name, s in ev.seconds.items():
        out.append(Metric("attack_seconds", s, attack=name))
    return out


def evaluate(model: nn.Module, data: ImageData, cfg: EvalConfig, specs: tuple[AttackSpec, ...], device: torch.device, seed: int) -> list[Metric]:
    """Clean accuracy on the whole test set, attacks on the fixed evaluation subset."""
    clean = accuracy(model, data.x_test, data.y_test, device, cfg.batch_size)
    x, y = eval_subset(data, cfg)
    ev = run_attacks(model, x, y, specs, device, cfg.batch_size, seed)
    return [Metric("clean_acc", float(clean.float().mean()))] + metrics_of(ev)


def per_eps(robust: dict[tuple[str, float], float]) -> dict[str, list[tuple[float, float]]]:
    """Robustness curves: attack -> [(eps, accuracy)] sorted by eps."""
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (name, eps), acc in robust.items():
        curves[name].append((eps, acc))
    return {k: sorted(v) for k, v in curves.items()}
