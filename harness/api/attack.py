"""The attack plugin contract: the base classes, the threat models and what their eps-balls are."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from harness.api.errors import AttackError

THREAT_MODELS = ("linf", "l2")
# The same threat models as pyautoattack spells them.
REFERENCE_NORMS = {"linf": "Linf", "l2": "L2"}


class Attack(ABC):
    """Finds adversarial images inside an eps-ball around clean [0, 1] images."""

    # A class default; attacks with a `norm` parameter (square, autoattack) set it per instance.
    threat_model: str = "linf"
    # False for query-only attacks: the gradient-masking check compares white-box against black-box results.
    white_box: bool = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """Adversarial versions of `x` (same shape, in [0, 1], within `eps` in the threat model's norm)."""

    def perturb_traced(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> tuple[Tensor, dict[str, Tensor]]:
        """`perturb`, plus per stage of a multi-stage attack which examples were still correct after it."""
        return self.perturb(model, x, y, eps), {}


class MinimalAttack(Attack):
    """An attack that looks for the smallest adversarial perturbation, without a budget (DeepFool, C&W)."""

    threat_model = "l2"

    @abstractmethod
    def minimal(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples as close to `x` as the attack can find (unbounded; `x` itself where it failed)."""

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """The minimal adversarial example projected onto the eps-ball (unchanged when already inside)."""
        return project(self.minimal(model, x, y), x, eps, self.threat_model)


def check_threat_model(norm: str, name: str) -> str:
    """A validated threat model name, or an AttackError naming the accepted ones."""
    norm = norm.lower()
    if norm not in THREAT_MODELS:
        raise AttackError(f"attack {name!r}: unknown norm {norm!r}; accepted: {', '.join(THREAT_MODELS)}.")
    return norm


def view_per_example(v: Tensor, like: Tensor) -> Tensor:
    """A per-example vector shaped to broadcast over images."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def norms(d: Tensor, threat_model: str, squares: bool = False) -> Tensor:
    """Per-example size of perturbations `d` in the threat model's norm ('linf'/'l2', either case).

    `squares` computes L2 as sqrt(sum of squares), pyautoattack's arithmetic: the harness's APGD and FAB need it to
    stay bit-for-bit equal to the reference (torch's `norm` rounds differently).
    """
    flat = d.flatten(1)
    if threat_model.lower() == "linf":
        return flat.abs().amax(1)
    return (flat**2).sum(-1).sqrt() if squares else flat.norm(dim=1)


def project(x_adv: Tensor, x: Tensor, eps: float, threat_model: str) -> Tensor:
    """Project `x_adv` onto the eps-ball around `x` intersected with the [0, 1] box."""
    delta = x_adv - x
    if threat_model == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * view_per_example((eps / size).clamp(max=1.0), x)
    return (x + delta).clamp(0.0, 1.0)
