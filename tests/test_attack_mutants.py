"""Tests written against surviving mutants of the attacks: each pins a behaviour that a one-token change of
`harness/attacks/` broke unnoticed (a weaker random start, restarts that do nothing, early stop that returns the
wrong iterate, targets in the wrong order, an ensemble that forgets a success, ignored attack parameters).

Every expected value is computed independently of the code under test (closed forms on linear models, textbook
loops written out here, or pyautoattack's reference code), on tiny seeded models and data, with no datasets and
no trained model.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.nets import frozen
from harness.attacks.common import COMPACT, MASKS, forced_policy
from harness.attacks.pgd import pgd, random_start


class Linear(nn.Module):
    """A seeded linear classifier on flattened images: gradients and decision boundaries in closed form."""

    def __init__(self, d: int, classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(classes, d, generator=g))
        self.b = nn.Parameter(torch.zeros(classes))

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.w.T + self.b


class Ramp(nn.Module):
    """Two classes: class 1 scores 10 * relu(sum(x) - 2.1), class 0 a constant 0.5.

    Around x = 0.5 (sum 2 over four pixels) the loss is flat, so a gradient step from x itself goes nowhere; only a
    random start whose pixel sum lands above 2.1 gives a gradient, and one step from there crosses the boundary.
    """

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1) @ torch.ones(x[0].numel(), dtype=x.dtype)  # a matmul: its input gradient is a real tensor
        return torch.stack([torch.full_like(s, 0.5), 10.0 * torch.relu(s - 2.1)], 1)


def _fooled(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Which rows of `x` the model misclassifies."""
    with torch.no_grad():
        return model(x).argmax(1) != y


# --- harness/attacks/pgd.py ----------------------------------------------------------------------------------------


def test_linf_random_start_is_uniform_over_the_whole_ball_and_in_the_box() -> None:
    """The Linf start is x + U[-eps, eps] per pixel, clipped to [0, 1]: both signs, up to eps, never outside."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    eps = 0.3
    start = random_start(x, eps, "linf", torch.Generator().manual_seed(1))
    noise = start - x
    assert float(noise.abs().max()) <= eps + 1e-6
    assert float(start.min()) >= 0.0 and float(start.max()) <= 1.0
    # Away from the box edges the noise is unclipped: it fills [-eps, eps] with mean ~0 (4096-ish draws).
    inner = (x > eps) & (x < 1 - eps)
    assert float(noise[inner].min()) < -0.95 * eps and float(noise[inner].max()) > 0.95 * eps
    assert abs(float(noise[inner].mean())) < 0.05 * eps


def test_l2_random_start_stays_inside_the_l2_ball_and_the_box() -> None:
    """The L2 start is a uniform direction times a radius in [0, eps], then clipped: never further than eps."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 4, 4, generator=g)
    eps = 0.5
    start = random_start(x, eps, "l2", torch.Generator().manual_seed(2))
    size = (start - x).flatten(1).norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(size.max()) > 0.9 * eps  # radii spread over [0, eps]
    assert float(start.min()) >= 0.0 and float(start.max()) <= 1.0


def test_pgd_restarts_and_random_start_find_what_one_run_cannot() -> None:
    """On `Ramp` PGD succeeds exactly when its random start lands past the ramp (probability ~0.19 per start): no
    random start fools none, one start some, four restarts clearly more (1 - 0.81^4 ~ 0.57), and never fewer."""
    model = Ramp()
    x, y = torch.full((400, 1, 2, 2), 0.5), torch.zeros(400, dtype=torch.long)
    eps = 0.1
    none = pgd(model, x, y, eps, "linf", steps=3, restarts=1, rand_init=False, seed=0)
    one = pgd(model, x, y, eps, "linf", steps=3, restarts=1, seed=0)
    four = pgd(model, x, y, eps, "linf", steps=3, restarts=4, seed=0)
    f_none, f_one, f_four = (_fooled(model, a, y) for a in (none, one, four))
    assert int(f_none.sum()) == 0
    assert 0.1 < float(f_one.float().mean()) < 0.3
    assert float(f_four.float().mean()) > 0.45
    # Restarts keep every example an earlier restart fooled (the first restart is the single run: same seed).
    assert bool((f_four | ~f_one).all())
    assert float((four - x).abs().max()) <= eps + 1e-6


def _textbook_iterates(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int) -> list[Tensor]:
    """Plain Linf PGD from x (no random start, no early stop): every iterate x_0 .. x_steps."""
    out, x_adv = [x.clone()], x.clone()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0.0, 1.0)
        out.append(x_adv)
    return out


@pytest.mark.parametrize("policy", [COMPACT, MASKS])
def test_pgd_early_stop_returns_the_first_fooling_iterate(policy: str) -> None:
    """With early stop each example comes back as its first misclassified iterate of plain PGD (the last iterate
    where none fools), under both compaction policies: never a later, possibly unfooled, one."""
    model = Linear(16)
    g = torch.Generator().manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(64, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, steps = 0.25, 8
    alpha = 2.5 * eps / steps
    its = _textbook_iterates(model, x, y, eps, alpha, steps)
    expected = its[-1].clone()
    first = torch.full((len(x),), steps)
    for t in range(steps, 0, -1):  # the earliest fooling iterate wins
        f = _fooled(model, its[t], y)
        expected[f] = its[t][f]
        first[f] = t
    assert 0 < int((first < steps).sum()) and int((first == steps).sum()) < len(x)  # early stop matters here
    assert len(set(first.tolist())) > 2  # examples stop at different steps
    with frozen(model), forced_policy(policy):
        ours = pgd(model, x, y, eps, "linf", steps=steps, rand_init=False, early_stop=True)
    assert torch.allclose(ours, expected, atol=1e-6)


class PixelSum(nn.Module):
    """Sums each channel's pixels first: the loss's input gradient is one value per channel, broadcast (stride 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = Linear(2, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.sum((2, 3)))


def test_fgsm_and_pgd_take_an_input_gradient_that_shares_memory() -> None:
    """A broadcast input gradient is signed out of place (in place, torch refuses to write it), and FGSM is the
    textbook step: the sign of dCE/d(channel sum), per channel, on every pixel."""
    from harness.attacks.fgsm import FGSM

    model = PixelSum().eval()
    x = 0.3 + 0.4 * torch.rand(6, 2, 3, 3, generator=torch.Generator().manual_seed(7))
    y = torch.arange(6) % 3
    s = x.sum((2, 3)).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model.linear(s), y, reduction="sum"), s)
    expected = (x + 0.1 * g.sign()[:, :, None, None]).clamp(0.0, 1.0)
    with frozen(model):
        assert torch.allclose(FGSM().perturb(model, x, y, 0.1), expected)
        adv = pgd(model, x, y, 0.1, "linf", steps=3, rand_init=False)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6


# --- harness/attacks/apgd.py and fab.py: target order with several restarts, against the reference ----------------


def _tiny_cnn() -> nn.Module:
    """A seeded two-layer CNN on 1x6x6 images with 10 classes, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    return net.eval()


def _tiny_data(n: int = 24) -> tuple[Tensor, Tensor]:
    """Random 1x6x6 images labelled with the tiny CNN's own prediction (every example starts correct)."""
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return x, _tiny_cnn()(x).argmax(1)


def _second_class_unreachable() -> tuple[nn.Module, Tensor, Tensor]:
    """A linear 10-class model on 1x6x6 images near 0.5 where only the 3rd most likely class can be reached.

    Class 0 scores 1 and class 1 scores 0.9 whatever the image (their difference has no gradient); class 2 scores
    v . (x - 0.5) for a +-1 vector v, so an Linf step of 0.05 raises it by 1.8 and crosses over; classes 3-9 score
    -1 and cannot be reached either. A targeted attack fools an image only once it aims at the 3rd class.
    """
    model = Linear(36)
    v = torch.where(torch.rand(36, generator=torch.Generator().manual_seed(5)) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        model.w.zero_()
        model.w[2] = v
        model.b.copy_(torch.tensor([1.0, 0.9, -0.5 * float(v.sum())] + [-1.0] * 7))
    x = 0.5 + 0.02 * (2 * torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(6)) - 1)
    return model.eval(), x, torch.zeros(16, dtype=torch.long)


@pytest.mark.parametrize("attack,norm,eps", [("apgd-t", "L2", 0.3), ("fab-t", "Linf", 0.05)])
def test_targeted_attacks_with_restarts_take_targets_in_the_references_order(attack: str, norm: str, eps: float) -> None:
    """With two restarts per target, runs 0 and 1 aim at the 2nd most likely class and runs 2 and 3 at the 3rd, as
    pyautoattack's APGD-T and FAB-T do: here only the 3rd class is reachable, so every example is fooled, by run 2,
    and (same seed, no early stop) the images are the reference's bit for bit (L2 APGD-T: the image depends on
    which run found it; a Linf run would end in the same corner of the box from any start)."""
    from pyautoattack.autopgd_base import APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT

    from harness.attacks.apgd import apgd_targeted
    from harness.attacks.fab import fab

    model, x, y = _second_class_unreachable()
    with torch.no_grad():
        assert bool((model(x).argmax(1) == 0).all())
        assert bool((model(x).sort(1)[1][:, -2] == 1).all()) and bool((model(x).sort(1)[1][:, -3] == 2).all())
    with frozen(model), torch.random.fork_rng():
        if attack == "apgd-t":
            ref = APGDAttack_targeted(model, n_iter=5, norm=norm, eps=eps, seed=1, n_restarts=2, n_target_classes=2, device="cpu").perturb(x, y)
            ours = apgd_targeted(model, x, y, eps, norm, n_iter=5, n_restarts=2, n_target_classes=2, seed=1, early_stop=False)
        else:
            ref = FABAttack_PT(model, norm=norm, n_restarts=2, n_iter=5, eps=eps, seed=2, targeted=True, n_target_classes=2, device="cpu").perturb(x, y)
            ours = fab(model, x, y, eps, norm, True, 5, 2, 2, seed=2, early_stop=False)
    assert bool(_fooled(model, ref, y).all())
    assert torch.equal(ours, ref)


class FlipOnce(nn.Module):
    """A linear model whose `flip`-th call (1-based) puts class 1 ahead of every row's class 0, and only that call:
    the iterate classified then is adversarial, the ones after it are not."""

    def __init__(self, flip: int) -> None:
        super().__init__()
        self.linear, self.calls, self.flip = Linear(16, 3), 0, flip
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.inputs.append(x.detach().clone())
        logits = 0.01 * self.linear(x) + torch.tensor([5.0, 0.0, 0.0])
        return logits + torch.tensor([0.0, 10.0, 0.0]) if self.calls == self.flip else logits


@pytest.mark.parametrize("policy,early_stop", [(COMPACT, True), (MASKS, True), (MASKS, False)])
def test_apgd_an_example_once_fooled_stays_fooled_with_that_iterate(policy: str, early_stop: bool) -> None:
    """APGD counts an example as fooled if any iterate fooled it (the reference's acc = min(acc, pred)), and returns
    that iterate, even when later iterates are classified correctly again."""
    from harness.attacks.apgd import apgd_single_run

    model = FlipOnce(flip=2)  # call 1: the start, call 2: the first iterate
    x = torch.full((4, 1, 4, 4), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    with forced_policy(policy):
        fooled, adv = apgd_single_run(model, x, y, 0.1, "Linf", "ce", 6, x.clone(), early_stop=early_stop)
    assert fooled.tolist() == [True] * 4
    assert torch.equal(adv, model.inputs[1])


# --- harness/attacks/autoattack.py ---------------------------------------------------------------------------------


class Threshold(nn.Module):
    """Two classes: class 1 exactly when the first pixel exceeds 0.5."""

    def forward(self, x: Tensor) -> Tensor:
        p = x.flatten(1)[:, :1]
        return torch.cat([0.5 - p, p - 0.5], 1)


def _images(*first_pixels: float) -> Tensor:
    """One 1x1x2 image per value: that first pixel, then 0.1."""
    return torch.tensor([[[[v, 0.1]]] for v in first_pixels])


@pytest.mark.parametrize(
    "early,again,want_fooled,want_from",
    [
        # Row 0 fooled by the early-stopped run, row 1 changed but not fooled (doubtful): the re-run fools row 1 only.
        ((0.9, 0.3, 0.2), (0.2, 0.8, 0.2), [True, True, False], ["early", "again", "clean"]),
        # Nothing fooled at first, row 0 doubtful: the re-run must happen, and its success counts.
        ((0.3, 0.2, 0.2), (0.7, 0.2, 0.2), [True, False, False], ["again", "clean", "clean"]),
    ],
)
def test_autoattack_component_keeps_a_success_of_either_run(
    monkeypatch: pytest.MonkeyPatch, early: tuple[float, ...], again: tuple[float, ...], want_fooled: list[bool], want_from: list[str]
) -> None:
    """A component's example counts as fooled if the early-stopped run or the reference-style re-run fooled it, and
    its image is one that fools; the re-run happens whenever a changed image does not fool on re-check."""
    from harness.attacks import autoattack

    model, x, y = Threshold(), _images(0.2, 0.2, 0.2), torch.zeros(3, dtype=torch.long)
    runs: list[bool] = []

    def fake(aa: Any, name: str, xs: Tensor, ys: Tensor, early_stop: bool = True) -> Tensor:
        runs.append(early_stop)
        return _images(*(early if early_stop else again))

    monkeypatch.setattr(autoattack, "run_component", fake)
    adv, fooled = autoattack.AutoAttack.component(None, "apgd-ce", model, x, y)  # the stub never reads the reference object
    assert runs == [True, False]
    assert fooled.tolist() == want_fooled
    assert bool((_fooled(model, adv, y) == fooled).all())
    source = {"early": _images(*early), "again": _images(*again), "clean": x}
    for i, s in enumerate(want_from):
        if want_fooled[i]:
            assert torch.equal(adv[i], source[s][i])


def test_autoattack_ensemble_keeps_each_images_first_success(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each component attacks only the images every earlier one failed on; an image's result is the first success,
    the clean image where all failed, and a clean-misclassified image is never attacked."""
    from types import SimpleNamespace

    from harness.attacks.autoattack import AutoAttack

    model = Threshold()
    x, y = _images(0.2, 0.25, 0.3, 0.9), torch.zeros(4, dtype=torch.long)  # row 3 is misclassified already
    # Per component, the first pixel it moves each (clean-correct) row to; > 0.5 fools.
    moves = {"a": {0: 0.7, 1: 0.3, 2: 0.3}, "b": {0: 0.95, 1: 0.3, 2: 0.6}, "c": {0: 0.99, 1: 0.4, 2: 0.99}}
    seen: dict[str, list[int]] = {}

    def component(aa: Any, name: str, m: nn.Module, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        rows = [int(r) for r in torch.nonzero((xs[:, None] == x[None]).flatten(2).all(2))[:, 1]]
        seen[name] = rows
        adv = _images(*(moves[name][r] for r in rows))
        return adv, _fooled(m, adv, ys)

    monkeypatch.setattr(AutoAttack, "reference", lambda self, model, eps, device: SimpleNamespace(attacks_to_run=["a", "b", "c"]))
    monkeypatch.setattr(AutoAttack, "component", staticmethod(component))
    adv, trace = AutoAttack().perturb_traced(model, x, y, 1.0)
    assert seen == {"a": [0, 1, 2], "b": [1, 2], "c": [1]}
    assert torch.equal(adv, _images(0.7, 0.25, 0.6, 0.9))
    assert {k: v.tolist() for k, v in trace.items()} == {
        "a": [False, True, True, False], "b": [False, True, False, False], "c": [False, True, False, False]
    }


@pytest.mark.parametrize("version,component", [("plus", "fab-t"), ("plus", "fab"), ("standard", "fab-t")])
def test_autoattack_runs_fab_with_the_references_restarts(monkeypatch: pytest.MonkeyPatch, version: str, component: str) -> None:
    """The reference runs FAB-T with one restart per target class whatever `fab.n_restarts` says, untargeted FAB
    with `fab.n_restarts`; both with the reference object's iterations, targets and seed."""
    from harness.attacks import autoattack

    seen: list[tuple[Any, ...]] = []

    def record(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str, targeted: bool, n_iter: int, restarts: int,
               n_target_classes: int, seed: int, *rest: Any) -> Tensor:
        seen.append((targeted, n_iter, restarts, n_target_classes, seed))
        return x

    monkeypatch.setattr(autoattack, "fab", record)
    model = Linear(4, 10)
    aa = autoattack.AutoAttack(version=version, seed=3).reference(model, 0.1, torch.device("cpu"))
    x, y = torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    autoattack.run_component(aa, component, x, y)
    want_restarts = 1 if component == "fab-t" else aa.fab.n_restarts
    assert seen == [(component == "fab-t", aa.fab.n_iter, want_restarts, aa.fab.n_target_classes, 3)]
    assert version == "standard" or aa.fab.n_restarts > 1  # the setting FAB-T must ignore is really there


def test_batch_independence_probe_detects_a_batch_dependent_model() -> None:
    """A model whose logits depend on the rest of the batch (batch statistics) must not be compacted."""
    from harness.attacks.autoattack import batch_independent

    class BatchCentered(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return Linear(4, 3)(x - x.mean(0, keepdim=True))

    x = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert batch_independent(Linear(4, 3), x)
        assert not batch_independent(BatchCentered(), x)


# --- harness/attacks/deepfool.py and cw.py -------------------------------------------------------------------------


def _linear_case() -> tuple[Linear, Tensor, Tensor]:
    """A 10-class linear model on 8x8 images near 0.5 (far from the box edges) and its own labels."""
    model = Linear(64).eval()
    x = 0.4 + 0.2 * torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def test_deepfool_on_a_linear_model_is_one_overshot_step_to_the_nearest_boundary() -> None:
    """On a linear model DeepFool's first step lands (1e-4 past) on the nearest class boundary, and the result is that
    step times 1 + overshoot: x + (1 + o) (d + 1e-4) (w_k - w_y) / ||w_k - w_y||, d = |f_k - f_y| / ||w_k - w_y||."""
    from harness.attacks.deepfool import DeepFool

    model, x, y = _linear_case()
    overshoot = 0.2
    with torch.no_grad():
        f = model(x)
        dw = model.w[None, :, :] - model.w[y][:, None, :]  # (n, classes, d): w_k - w_y
        dn = dw.norm(dim=2)
        dist = ((f - f.gather(1, y[:, None])).abs() / dn).scatter(1, y[:, None], float("inf"))
        k = dist.argmin(1)
        u = torch.arange(len(y))
        step = ((dist[u, k] + 1e-4) / dn[u, k])[:, None] * dw[u, k]
        expected = (x + (1 + overshoot) * step.view_as(x)).clamp(0.0, 1.0)
    with frozen(model):
        adv = DeepFool(overshoot=overshoot).minimal(model, x, y)
    assert torch.allclose(adv, expected, atol=1e-5)
    assert bool(_fooled(model, adv, y).all())


def _textbook_deepfool(model: nn.Module, x: Tensor, y: int, overshoot: float, steps: int, k: int) -> Tensor:
    """DeepFool on one image as the paper's code writes it: gradients at x + (1 + overshoot) r_tot, one class at a time."""
    with torch.no_grad():
        f0 = model(x[None])[0]
    classes = [y] + [int(c) for c in f0.scatter(0, torch.tensor([y]), float("-inf")).topk(k - 1).indices]
    r = torch.zeros_like(x)
    for _ in range(steps):
        xi = (x + (1 + overshoot) * r).clamp(0.0, 1.0).requires_grad_(True)
        out = model(xi[None])[0, classes]
        if int(out.argmax()) != 0:
            break
        g = [torch.autograd.grad(out[j], xi, retain_graph=True)[0] for j in range(k)]
        best, step = float("inf"), torch.zeros_like(x)
        for j in range(1, k):
            w = g[j] - g[0]
            dist = float((out[j] - out[0]).detach().abs()) / max(float(w.norm()), 1e-8)
            if dist < best:
                best, step = dist, (dist + 1e-4) * w / max(float(w.norm()), 1e-8)
        r = r + step
    return (x + (1 + overshoot) * r).clamp(0.0, 1.0).detach()


def test_deepfool_on_a_curved_model_follows_the_papers_loop() -> None:
    """On a tanh MLP, where the linearisation moves with the point, every image is the textbook loop's, whose gradients
    are taken at the overshot point x + (1 + overshoot) r_tot (a large overshoot makes that point far from x + r_tot)."""
    from harness.attacks.deepfool import DeepFool

    model = _tanh_mlp()
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        y = model(x).argmax(1)
    with frozen(model):
        adv = DeepFool(steps=20, overshoot=0.5, candidates=4).minimal(model, x, y)
        expected = torch.stack([_textbook_deepfool(model, x[i], int(y[i]), 0.5, 20, 4) for i in range(len(x))])
    assert not torch.equal(expected, x)
    assert torch.allclose(adv, expected, atol=1e-5)


def test_cw_confidence_is_a_margin_the_result_keeps() -> None:
    """C&W with confidence kappa counts an iterate as adversarial only where another class leads by kappa or more."""
    from harness.attacks.cw import CWL2

    model, x, y = _linear_case()
    kappa = 2.0
    with frozen(model):
        adv = CWL2(steps=60, binary_steps=3, lr=0.05, confidence=kappa).minimal(model, x, y)
    found = (adv != x).flatten(1).any(1)
    assert int(found.sum()) >= 12
    with torch.no_grad():
        f = model(adv)
        others = f.scatter(1, y[:, None], float("-inf")).amax(1)
        lead = others - f.gather(1, y[:, None]).squeeze(1)
    assert bool((lead[found] >= kappa - 1e-4).all())


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every batch it is asked to classify."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_cw_returns_the_smallest_adversarial_iterate_it_evaluated() -> None:
    """Per example, C&W's result is the smallest (L2) of all the iterates it evaluated that were misclassified:
    recomputed here from every input the model saw, not from the attack's bookkeeping."""
    from harness.attacks.cw import CWL2

    model, x, y = _linear_case()
    rec = Recorder(model)
    with frozen(rec):
        adv = CWL2(steps=30, binary_steps=3, lr=0.05).minimal(rec, x, y)
    best = torch.full((len(x),), float("inf"))
    with torch.no_grad():
        for batch in rec.seen:
            size = (batch - x).flatten(1).norm(dim=1)
            best = torch.where((model(batch).argmax(1) != y) & (size < best), size, best)
    found = best < float("inf")
    assert int(found.sum()) >= 12
    assert torch.allclose((adv - x).flatten(1).norm(dim=1)[found], best[found], rtol=1e-5)
    assert torch.equal(adv[~found], x[~found])


# --- harness/attacks/common.py: the restarts scaffold ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fab-t", "square"])
def test_clean_misclassified_examples_are_returned_unchanged(name: str) -> None:
    """AutoAttack's components attack only the examples classified correctly to begin with: the others come back
    as they came (already non-robust; the reference never perturbs them)."""
    from harness.attacks.apgd import apgd, apgd_targeted
    from harness.attacks.fab import fab
    from harness.attacks.square import square_linf

    model = _tiny_cnn()
    x, y = _tiny_data(12)
    wrong = torch.arange(12) % 3 == 0
    y = torch.where(wrong, (y + 1) % 10, y)
    eps = 0.05
    with frozen(model):
        if name == "apgd-ce":
            adv = apgd(model, x, y, eps, n_iter=3)
        elif name == "apgd-t":
            adv = apgd_targeted(model, x, y, eps, n_iter=3, n_target_classes=2)
        elif name == "fab-t":
            adv = fab(model, x, y, eps, n_iter=3, n_target_classes=2)
        else:
            adv = square_linf(model, x, y, eps, n_queries=20)
    assert torch.equal(adv[wrong], x[wrong])


# --- the plugins pass their settings through -----------------------------------------------------------------------


@pytest.mark.parametrize("classes,targets,want_targets", [(10, 3, 3), (10, 9, 9), (4, 9, 3), (3, 9, None)])
def test_apgd_plugin_passes_restarts_and_targets_through(
    monkeypatch: pytest.MonkeyPatch, classes: int, targets: int, want_targets: int | None
) -> None:
    """`APGD(...)` runs APGD with its own restarts, rho and seed, and APGD-T with min(n_target_classes, classes - 1)
    targets (the targeted DLR loss needs four classes or more)."""
    from harness.api.errors import AttackError
    from harness.attacks import apgd as apgd_module

    calls: dict[str, tuple[Any, ...]] = {}

    def spy(name: str) -> Any:
        def record(model: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            calls[name] = args
            return x

        return record

    monkeypatch.setattr(apgd_module, "apgd", spy("apgd"))
    monkeypatch.setattr(apgd_module, "apgd_targeted", spy("apgd_targeted"))
    model, x = Linear(4, classes), torch.rand(2, 1, 2, 2)
    y = torch.zeros(2, dtype=torch.long)
    apgd_module.APGD(loss="dlr", norm="l2", n_iter=7, restarts=3, rho=0.5, seed=11).perturb(model, x, y, 0.5)
    assert calls["apgd"] == (y, 0.5, "L2", "dlr", 7, 3, 11, 0.5)
    attack = apgd_module.APGD(loss="dlr-targeted", n_iter=7, restarts=2, n_target_classes=targets, seed=5)
    if want_targets is None:
        with pytest.raises(AttackError, match="four or more classes"):
            attack.perturb(model, x, y, 0.1)
        return
    attack.perturb(model, x, y, 0.1)
    assert calls["apgd_targeted"] == (y, 0.1, "Linf", 7, 2, want_targets, 5, 0.75)


def test_square_plugin_passes_restarts_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Square(norm='linf', restarts=...)` runs Linf Square with its own queries, p_init, restarts and seed."""
    from harness.attacks import square as square_module

    seen: list[tuple[Any, ...]] = []

    def record(model: nn.Module, x: Tensor, *args: Any) -> Tensor:
        seen.append(args)
        return x

    monkeypatch.setattr(square_module, "square_linf", record)
    x, y = torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    square_module.Square(norm="linf", n_queries=9, p_init=0.3, restarts=4, seed=6).perturb(Linear(4, 3), x, y, 0.1)
    assert seen == [(y, 0.1, 9, 0.3, 4, 6)]


# --- the accelerator's compaction policy ('masks'), run on the CPU ---------------------------------------------------


class Centred(nn.Module):
    """Maps [0, 1] pixels to [-2, 2]."""

    def forward(self, x: Tensor) -> Tensor:
        return (x - 0.5) * 4


def _tanh_mlp() -> nn.Module:
    """A seeded three-layer tanh MLP on 1x6x6 images, curved enough that attacks need several steps, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(Centred(), nn.Flatten(), nn.Linear(36, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
    return net.eval()


@pytest.mark.parametrize("name,eps", [("apgd", 0.02), ("square", 0.02), ("fab", 0.02)])
def test_masks_policy_fools_the_references_examples(name: str, eps: float) -> None:
    """Under the accelerator's policy (no compaction, an occasional "all done?" check) early stop must not end a run
    while some example is still being attacked: the same examples end up fooled as by pyautoattack's code."""
    from pyautoattack.autopgd_base import APGDAttack
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    from harness.attacks.apgd import apgd
    from harness.attacks.fab import fab
    from harness.attacks.square import square_linf

    model = _tanh_mlp()
    x = torch.rand(32, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(1)
    with frozen(model), torch.random.fork_rng(), forced_policy(MASKS):
        if name == "apgd":
            ref = APGDAttack(model, n_iter=10, norm="Linf", eps=eps, seed=0, device="cpu").perturb(x, y)
            ours = apgd(model, x, y, eps, n_iter=10, seed=0)
        elif name == "square":
            ref = SquareAttack(model, norm="Linf", n_queries=60, eps=eps, p_init=0.8, seed=0, verbose=False, resc_schedule=False, device="cpu").perturb(x, y)
            ours = square_linf(model, x, y, eps, 60, 0.8, seed=0)
        else:
            ref = FABAttack_PT(model, norm="Linf", n_restarts=1, n_iter=10, eps=eps, seed=0, targeted=True, n_target_classes=2, device="cpu").perturb(x, y)
            ours = fab(model, x, y, eps, "Linf", True, 10, 1, 2, seed=0)
    f = _fooled(model, ref, y)
    assert 1 < int(f.sum()) < len(y) - 1
    assert torch.equal(_fooled(model, ours, y), f)
    assert float((ours - x).abs().max()) <= eps + 1e-6
