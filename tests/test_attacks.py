"""Attacks against reference implementations on a small trained model and fixed digits data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.attack import MinimalAttack, norms
from harness.api.data import ImageData, to_float
from harness.api.nets import frozen
from harness.api.plugins import attacks
from harness.evaluation.runs import check_in_ball

N = 48  # fixed test examples: enough to compare accuracies, few enough for a 2-core CPU


@pytest.fixture(scope="module")
def xy(digits: ImageData) -> tuple[Tensor, Tensor]:
    """The first N digits test images and labels."""
    return to_float(digits.x_test[:N]), digits.y_test[:N]


def robust_acc(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def textbook_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, norm: str, stop: bool = False) -> Tensor:
    """Madry et al.'s PGD written out plainly (mean loss, start at x), as a reference; `stop` freezes fooled examples."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        (g,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            frozen_now = (logits.argmax(1) != y).view(-1, 1, 1, 1) if stop else torch.zeros(len(y), 1, 1, 1, dtype=torch.bool)
            before = x_adv.detach().clone()
            if norm == "linf":
                x_adv = x_adv + alpha * g.sign()
                x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
            else:
                g = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12)
                d = x_adv + alpha * g - x
                d = d * (eps / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12)).clamp(max=1)
                x_adv = (x + d).clamp(0, 1)
            x_adv = torch.where(frozen_now, before, x_adv)
    return x_adv.detach()


def test_fgsm_equals_textbook(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    with frozen(trained_cnn):
        ours = attacks.get("fgsm").obj().perturb(trained_cnn, x, y, 0.1)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(trained_cnn(xr), y), xr)
        ref = (x + 0.1 * g.sign()).clamp(0, 1)
    # Summed vs averaged loss only rescales the gradient: the signs, hence the images, are identical.
    assert torch.equal(ours, ref)
    check_in_ball(ours, x, 0.1, "linf", "fgsm")


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("name,norm,eps", [("pgd_linf", "linf", 0.1), ("pgd_l2", "l2", 0.75)])
def test_pgd_matches_textbook(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], name: str, norm: str, eps: float, early_stop: bool) -> None:
    x, y = xy
    steps, alpha = 7, 2.5 * eps / 7  # 7 steps: early stop compacts the batch after steps 1, 2 and 4
    with frozen(trained_cnn):
        ours = attacks.get(name).obj(steps=steps, random_start=False, early_stop=early_stop).perturb(trained_cnn, x, y, eps)
        ref = textbook_pgd(trained_cnn, x, y, eps, alpha, steps, norm, stop=early_stop)
    check_in_ball(ours, x, eps, norm, name)
    # Same algorithm from the same start: float rounding may move single pixels, never a decision here.
    assert robust_acc(trained_cnn, ours, y) == pytest.approx(robust_acc(trained_cnn, ref, y), abs=1 / N + 1e-9)
    if norm == "l2":  # (a Linf sign step can flip on a gradient entry that rounds to zero differently)
        assert (ours - ref).abs().max() < 1e-4
    clean = robust_acc(trained_cnn, x, y)
    assert robust_acc(trained_cnn, ours, y) < clean - 0.2  # the attack does real work


def test_pgd_early_stop_only_adds_fooled_examples(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    with frozen(trained_cnn):
        plain = attacks.get("pgd_linf").obj(steps=10, seed=2, early_stop=False).perturb(trained_cnn, x, y, 0.08)
        early = attacks.get("pgd_linf").obj(steps=10, seed=2, early_stop=True).perturb(trained_cnn, x, y, 0.08)
        fooled_plain, fooled_early = trained_cnn(plain).argmax(1) != y, trained_cnn(early).argmax(1) != y
    # Identical trajectories until an example is first fooled: stopping there can only keep it fooled.
    assert bool((fooled_early | ~fooled_plain).all())
    # Where neither stopped early the images are the same last iterate.
    same = ~fooled_early
    assert torch.allclose(early[same], plain[same], atol=1e-6)


def test_pgd_random_start_and_restarts(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    with frozen(trained_cnn):
        one = attacks.get("pgd_linf").obj(steps=5, restarts=1, seed=1).perturb(trained_cnn, x, y, 0.1)
        three = attacks.get("pgd_linf").obj(steps=5, restarts=3, seed=1).perturb(trained_cnn, x, y, 0.1)
        again = attacks.get("pgd_linf").obj(steps=5, restarts=3, seed=1).perturb(trained_cnn, x, y, 0.1)
    for adv in (one, three):
        check_in_ball(adv, x, 0.1, "linf", "pgd_linf")
    assert torch.equal(three, again)  # seeded
    # Restarts keep the first success: with the same seed the first restart is the single run, so never weaker.
    assert robust_acc(trained_cnn, three, y) <= robust_acc(trained_cnn, one, y)


def test_square_inside_ball_and_weaker_than_nothing(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    for norm, eps in (("linf", 0.15), ("l2", 1.0)):  # 100 queries: enough to fool some, cheap
        sq = attacks.get("square").obj(norm=norm, n_queries=100, seed=0)
        with frozen(trained_cnn):
            adv = sq.perturb(trained_cnn, x, y, eps)
        check_in_ball(adv, x, eps, norm, "square")
        assert robust_acc(trained_cnn, adv, y) < robust_acc(trained_cnn, x, y)


class Linear(nn.Module):
    """A linear classifier: its exact distance to the decision boundary is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(10, 64, generator=g))
        self.b = nn.Parameter(torch.zeros(10))

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.w.T + self.b


def boundary_distance(model: Linear, x: Tensor, y: Tensor) -> Tensor:
    """min over k != y of (f_y - f_k) / ||w_y - w_k||: the minimal L2 perturbation ignoring the pixel box."""
    with torch.no_grad():
        f = model(x)
        gap = f.gather(1, y[:, None]) - f
        wn = (model.w[y][:, None, :] - model.w[None]).norm(dim=2)
        d = gap / wn.clamp_min(1e-12)
        return d.scatter(1, y[:, None], float("inf")).amin(1)


@pytest.mark.parametrize("name,kwargs", [("deepfool", {"overshoot": 0.0}), ("cw_l2", {"steps": 100, "binary_steps": 4, "lr": 0.05})])
def test_minimal_attacks_on_a_linear_model(name: str, kwargs: dict[str, float]) -> None:
    model = Linear().eval()
    g = torch.Generator().manual_seed(1)
    x = 0.4 + 0.2 * torch.rand(16, 1, 8, 8, generator=g)  # away from the box edges, so clipping never binds
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = attacks.get(name).obj(**kwargs)
    assert isinstance(attack, MinimalAttack)
    with frozen(model):
        adv = attack.minimal(model, x, y)
    fooled = model(adv).argmax(1) != y
    size, exact = norms(adv - x, "l2"), boundary_distance(model, x, y)
    assert bool(fooled.all())
    # No attack can beat the exact minimum; DeepFool reaches it in one step on a linear model, C&W gets close.
    assert bool((size >= exact * (1 - 1e-3)).all())
    assert float((size / exact).median()) < (1.01 if name == "deepfool" else 1.1)


def test_autoattack_matches_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    from pyautoattack import AutoAttack as Reference

    x, y = xy[0][:8], xy[1][:8]
    eps = 0.05  # small enough that APGD-CE leaves examples for APGD-T, FAB-T and Square to be compared on
    ours = attacks.get("autoattack").obj(version="standard", seed=0, n_queries=100)
    with frozen(trained_cnn):
        adv, trace = ours.perturb_traced(trained_cnn, x, y, eps)
        ref = Reference(trained_cnn, norm="Linf", eps=eps, version="standard", seed=0)
        ref.square.n_queries = 100
        ref_adv, _ = ref.run_standard_evaluation(x, y, batch_size=8)
    assert bool(trace["apgd-ce"].any())  # the later components had work to do: the comparison covers them
    check_in_ball(adv, x, eps, "linf", "autoattack")
    assert list(trace) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert robust_acc(trained_cnn, adv, y) == robust_acc(trained_cnn, ref_adv, y)
    # Clean-misclassified examples are never robust, as in the reference.
    with torch.no_grad():
        clean = trained_cnn(x).argmax(1) == y
    assert not bool((trace["apgd-ce"] & ~clean).any())


@pytest.mark.parametrize("n,queries", [(24, 100), pytest.param(N, 500, marks=pytest.mark.slow)])
def test_autoattack_full_chain_matches_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], n: int, queries: int) -> None:
    from pyautoattack import AutoAttack as Reference

    x, y = xy[0][:n], xy[1][:n]
    eps = 0.05  # a budget where every component has examples left to attack
    ours = attacks.get("autoattack").obj(version="standard", seed=0, n_queries=queries)
    with frozen(trained_cnn), torch.random.fork_rng():
        adv, trace = ours.perturb_traced(trained_cnn, x, y, eps)
        ref = Reference(trained_cnn, norm="Linf", eps=eps, version="standard", seed=0)
        ref.square.n_queries = queries
        ref_adv, _ = ref.run_standard_evaluation(x, y, batch_size=n)
    accs = [float(m.float().mean()) for m in trace.values()]
    assert accs == sorted(accs, reverse=True)  # each component can only remove robust examples
    assert accs[0] < float((~fooled_by(trained_cnn, x, y)).float().mean())  # APGD-CE does fool some
    check_in_ball(adv, x, eps, "linf", "autoattack")
    # Every component is the reference's algorithm with the reference's random draws: the same robust examples.
    assert torch.equal(fooled_by(trained_cnn, adv, y), fooled_by(trained_cnn, ref_adv, y))
    assert torch.equal(trace["square"], ~fooled_by(trained_cnn, adv, y))


def fooled_by(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def test_every_attack_declares_a_threat_model() -> None:
    """Declared by the attack itself (its class or, with a `norm` parameter, the instance), never the base-class default."""
    import inspect

    from harness.api.attack import Attack, MinimalAttack

    for entry in attacks.entries():
        cls = entry.obj
        own = [k for k in cls.__mro__ if k not in (Attack, MinimalAttack, object) and "threat_model" in vars(k)]
        norm = inspect.signature(cls).parameters.get("norm")
        if norm is None:
            assert own, f"{entry.name} inherits the base class's threat model instead of declaring one"
            assert cls().threat_model in ("linf", "l2"), entry.name
            continue
        for tm in ("linf", "l2"):  # a `norm` parameter must decide the threat model
            attack = cls(norm=tm)
            assert "threat_model" in vars(attack) and attack.threat_model == tm, (entry.name, tm)
