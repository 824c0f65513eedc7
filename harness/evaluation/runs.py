"""Running attacks over a model's evaluation examples: per-example outcomes, batch by batch, inside the eps-ball."""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from harness.api.attack import Attack, MinimalAttack, norms, project
from harness.api.config import AttackSpec
from harness.api.data import batches, to_float
from harness.api.errors import AttackError
from harness.api.nets import frozen
from harness.api.plugins import attacks

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


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Per-example correctness (bool tensor on the CPU)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for xb, yb in batches(x, y, batch_size, device):
            out.append((model(xb).argmax(1) == yb).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def build_attack(spec: AttackSpec, seed: int) -> Attack:
    """The attack a grid entry names, with its parameters and the job's seed."""
    cls = attacks.get(spec.name).obj
    params = dict(spec.params)
    if "seed" in inspect.signature(cls).parameters:
        params.setdefault("seed", seed)
    return cls(**params)


def check_in_ball(x_adv: Tensor, x: Tensor, eps: float, threat_model: str, name: str) -> None:
    """Refuse an attack output outside the threat model's ball or the [0, 1] box."""
    if x_adv.shape != x.shape:
        raise AttackError(f"attack {name!r} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if x_adv.min() < -BALL_SLACK or x_adv.max() > 1 + BALL_SLACK:
        raise AttackError(f"attack {name!r} left the [0, 1] pixel range")
    size = norms(x_adv - x, threat_model)
    if (size > eps * (1 + BALL_SLACK) + BALL_SLACK).any():
        raise AttackError(f"attack {name!r} exceeded its {threat_model} budget eps={eps:g} (max {size.max():.4g})")


def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(x).argmax(1) == y


def attack_correct(
    attack: Attack, name: str, model: nn.Module, x: Tensor, y: Tensor, eps: float, device: torch.device, batch_size: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-example correctness (CPU) under a bounded attack, and after each stage of a multi-stage one."""
    masks: list[Tensor] = []
    stages: dict[str, list[Tensor]] = defaultdict(list)
    for i in range(0, len(y), batch_size):
        xb, yb = to_float(x[i : i + batch_size]).to(device), y[i : i + batch_size].to(device)
        x_adv, trace = attack.perturb_traced(model, xb, yb, eps)
        x_adv = x_adv.detach()
        check_in_ball(x_adv, xb, eps, attack.threat_model, name)
        masks.append(_correct(model, x_adv, yb).cpu())
        for stage, m in trace.items():
            stages[stage].append(m.cpu())
    empty = torch.zeros(0, dtype=torch.bool)
    return torch.cat(masks) if masks else empty, {k: torch.cat(v) for k, v in stages.items()}


def minimal_correct(
    attack: MinimalAttack, name: str, model: nn.Module, x: Tensor, y: Tensor, eps_list: tuple[float, ...], device: torch.device, batch_size: int
) -> tuple[dict[float, Tensor], Tensor]:
    """One run of a minimal-perturbation attack: correctness at each eps (its example projected to the ball) and sizes."""
    correct: dict[float, list[Tensor]] = defaultdict(list)
    sizes: list[Tensor] = []
    for i in range(0, len(y), batch_size):
        xb, yb = to_float(x[i : i + batch_size]).to(device), y[i : i + batch_size].to(device)
        x_min = attack.minimal(model, xb, yb).detach()
        check_in_ball(x_min, xb, float("inf"), attack.threat_model, name)
        size = norms(x_min - xb, attack.threat_model)
        sizes.append(torch.where(_correct(model, x_min, yb), float("inf"), size).cpu())
        for eps in eps_list:
            x_eps = project(x_min, xb, eps, attack.threat_model)
            check_in_ball(x_eps, xb, eps, attack.threat_model, name)
            correct[eps].append(_correct(model, x_eps, yb).cpu())
    empty = torch.zeros(0, dtype=torch.bool)
    return {e: torch.cat(correct[e]) if correct[e] else empty for e in eps_list}, torch.cat(sizes) if sizes else torch.zeros(0)


def _scatter(n: int, idx: Tensor, values: Tensor, fill: float | bool = False) -> Tensor:
    """A length-n vector holding `values` at `idx` and `fill` elsewhere."""
    out = torch.full((n,), fill, dtype=values.dtype)
    out[idx] = values
    return out


def run_attacks(model: nn.Module, x: Tensor, y: Tensor, specs: tuple[AttackSpec, ...], device: torch.device, batch_size: int, seed: int) -> Evaluation:
    """Clean correctness and, for each attack and eps, which examples stay correctly classified."""
    with frozen(model):
        ev = Evaluation(clean_correct=accuracy(model, x, y, device, batch_size))
        # As in AutoAttack, clean-misclassified examples are not attacked: they count as non-robust.
        idx = ev.clean_correct.nonzero().squeeze(1)
        xa, ya, n = x[idx], y[idx], len(y)
        for spec in specs:
            attack = build_attack(spec, seed)
            name = spec.name
            ev.threat[name], ev.white_box[name], ev.params[name] = attack.threat_model, attack.white_box, dict(spec.params)
            t0 = time.perf_counter()
            if isinstance(attack, MinimalAttack):
                by_eps, sizes = minimal_correct(attack, name, model, xa, ya, spec.eps, device, batch_size)
                ev.perturbation[name] = sizes
                for eps, m in by_eps.items():
                    ev.robust[(name, eps)] = _scatter(n, idx, m)
            else:
                for eps in spec.eps:
                    m, stages = attack_correct(attack, name, model, xa, ya, eps, device, batch_size)
                    ev.robust[(name, eps)] = _scatter(n, idx, m)
                    for stage, sm in stages.items():
                        ev.stages[(f"{name}/{stage}", eps)] = _scatter(n, idx, sm)
            ev.seconds[name] = time.perf_counter() - t0
    return ev
