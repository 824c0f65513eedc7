"""Tests written against surviving mutants of training and evaluation: each pins a behaviour a one-token change broke unnoticed.

Every expected value is computed independently of the code under test (a hand-written schedule formula, optimizer
steps and batch sizes counted by hand, a model that records its mode and the images it sees), on tiny hand-built
data, with no datasets, no trained model and no GPU.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.config import AttackSpec, SGDConfig, TrainConfig
from harness.api.data import ImageData
from harness.evaluation.runs import Evaluation, run_attacks
from harness.evaluation.sanity import eps_monotonic, masking_from_grid, slack, white_box_correct
from harness.training.schedule import scheduler
from harness.training.train import train

CPU = torch.device("cpu")
N, BS, EPOCHS, SIDE = 10, 4, 3, 6  # 10 images in batches of 4: two full batches and a partial one of 2 per epoch


class Recorder(nn.Module):
    """A linear classifier that records, per forward pass, its mode and the (float) images it was given."""

    def __init__(self, side: int = SIDE, classes: int = 3) -> None:
        """Fixed weights, so that runs are comparable."""
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(side * side, classes)
        self.modes: list[bool] = []
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        """Record, then classify."""
        self.modes.append(self.training)
        self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


def _data(augment: bool = False, flip: bool = True, n: int = N) -> ImageData:
    """n asymmetric 1-channel images; image i holds the value 20 * i + 10 at its top-left pixel, so it can be told apart."""
    g = torch.Generator().manual_seed(11)
    x = torch.randint(1, 9, (n, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8) * 20 + 10
    y = torch.arange(n) % 3
    return ImageData("hand", x, y, x[:4], y[:4], ["a", "b", "c"], (0.0,), (1.0,), augment=augment, flip=flip)


def _ids(batch: Tensor) -> list[int]:
    """Which images (by their marker pixel) a float batch holds."""
    return [round((float(v) * 255 - 10) / 20) for v in batch[:, 0, 0, 0]]


class _SpySGD(torch.optim.SGD):
    """SGD that records, at every step, the learning rate and settings of its group, and counts zero_grad calls."""

    log: list[dict[str, Any]] = []
    zero_grads: list[int] = []

    def step(self, closure: Any = None) -> Any:
        """Record the group, then step."""
        _SpySGD.log.append(dict(self.param_groups[0]) | {"params": None})
        return super().step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Count, then zero."""
        _SpySGD.zero_grads.append(1)
        super().zero_grad(set_to_none)


@pytest.fixture()
def spy_sgd(monkeypatch: pytest.MonkeyPatch) -> type[_SpySGD]:
    """torch.optim.SGD replaced by the recording spy for one test."""
    _SpySGD.log, _SpySGD.zero_grads = [], []
    monkeypatch.setattr(torch.optim, "SGD", _SpySGD)
    return _SpySGD


def _cosine(k: int, total: int) -> float:
    """Hand-written cosine factor at step k of total, from 1 to 0."""
    return 0.5 * (1 + math.cos(math.pi * k / total))


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_optimizer_gets_the_configs_settings_and_the_schedule_steps_per_batch(spy_sgd: type[_SpySGD], warmup_epochs: int) -> None:
    """3 epochs of 3 batches (the last one partial) are 9 steps, each at the hand-computed lr, momentum and weight decay."""
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BS, lr=0.2, momentum=0.8, weight_decay=0.01, warmup_epochs=warmup_epochs)
    train(Recorder(), _data(), cfg, seed=0, device=CPU)
    per_epoch = 3  # ceil(10 / 4), counted by hand
    total = EPOCHS * per_epoch
    warm = warmup_epochs * per_epoch
    want = [0.2 * ((k + 1) / warm if k < warm else _cosine(k - warm, total - warm)) for k in range(total)]
    assert [g["lr"] for g in spy_sgd.log] == pytest.approx(want)
    assert all(g["momentum"] == 0.8 and g["weight_decay"] == 0.01 and not g["nesterov"] for g in spy_sgd.log)
    assert len(spy_sgd.zero_grads) == total  # gradients cleared before every step, never accumulated


@pytest.mark.parametrize(("warmup_epochs", "per_epoch"), [(0, 10), (0.1, 10), (1, 10), (0.5, 3)])
def test_warmup_cosine_schedule_follows_its_formula(warmup_epochs: float, per_epoch: int) -> None:
    """Linear warm-up over round(warmup_epochs * steps per epoch) steps from lr/warm-up, then cosine to 0 at the run's end."""
    cfg = SGDConfig(epochs=2, lr=0.1, warmup_epochs=warmup_epochs)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = scheduler(opt, cfg, per_epoch)
    total, warm = 2 * per_epoch, round(warmup_epochs * per_epoch)
    for k in range(total):
        want = 0.1 * ((k + 1) / warm if k < warm else _cosine(k - warm, total - warm))
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-6, abs=1e-12), k
        opt.step()
        sched.step()


def test_onecycle_follows_its_formula_and_keeps_momentum() -> None:
    """One-cycle: cosine from lr/25 up to lr over the warm-up, then cosine down to lr/25/1e4; momentum never cycles."""
    cfg = SGDConfig(epochs=4, lr=0.1, momentum=0.85, schedule="onecycle", warmup_epochs=1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr, momentum=cfg.momentum)
    sched = scheduler(opt, cfg, 10)
    lo, hi, end = 0.1 / 25, 0.1, 0.1 / 25 / 1e4
    rise_end, last = 10 - 1, 40 - 1  # steps: rising phase ends at step 9 (pct_start * total - 1), run ends at 39

    def anneal(start: float, stop: float, pct: float) -> float:
        return stop + (start - stop) / 2 * (1 + math.cos(math.pi * pct))

    for k in range(40):
        want = anneal(lo, hi, k / rise_end) if k <= rise_end else anneal(hi, end, (k - rise_end) / (last - rise_end))
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-6), k
        assert opt.param_groups[0]["momentum"] == 0.85, k
        opt.step()
        sched.step()


def test_every_image_once_per_epoch_in_train_mode_reshuffled_and_seeded() -> None:
    """Batches of 4, 4, 2 covering each image exactly once per epoch, in train mode, shuffled anew each epoch by the seed."""

    def epochs_seen(seed: int) -> tuple[list[list[int]], Recorder]:
        model = Recorder()
        train(model, _data(), TrainConfig(epochs=EPOCHS, batch_size=BS, lr=1e-12), seed=seed, device=CPU)
        assert [len(b) for b in model.seen] == [4, 4, 2] * EPOCHS  # the last partial batch neither dropped nor padded
        ids = [_ids(b) for b in model.seen]
        return [sum(ids[3 * e : 3 * e + 3], []) for e in range(EPOCHS)], model

    orders, model = epochs_seen(1)
    assert all(sorted(o) == list(range(N)) for o in orders)
    assert all(model.modes) and not model.training  # trained in train mode, handed back in eval mode
    assert orders[0] != list(range(N)) and orders[0] != orders[1]  # shuffled, and anew every epoch
    assert epochs_seen(1)[0] == orders  # the seed fixes the order ...
    assert epochs_seen(2)[0] != orders  # ... and another seed changes it


def test_data_seed_alone_picks_the_training_subset() -> None:
    """With n_train < n, the images trained on depend on data_seed, not on the shuffling seed."""

    def used(seed: int, data_seed: int) -> set[int]:
        model = Recorder()
        train(model, _data(), TrainConfig(epochs=1, batch_size=BS, lr=1e-12), seed=seed, device=CPU, n_train=5, data_seed=data_seed)
        return {i for b in model.seen for i in _ids(b)}

    a = used(1, 7)
    assert len(a) == 5 and used(2, 7) == a
    assert any(used(1, d) != a for d in (8, 9, 10))


def test_reported_loss_is_the_mean_over_examples_of_the_last_epoch() -> None:
    """With lr 1e-12 the model is fixed: the reported loss is the plain mean cross-entropy over the 10 images (partial batch weighted by 2)."""
    model, data = Recorder(), _data()
    res = train(model, data, TrainConfig(epochs=2, batch_size=BS, lr=1e-12, weight_decay=0.0), seed=0, device=CPU)
    with torch.no_grad():
        want = F.cross_entropy(model.fc((data.x_train.float() / 255).flatten(1)), data.y_train)
    assert res.loss == pytest.approx(float(want), rel=1e-5)
    assert res.images == 2 * N


def _crops(img: Tensor, pad: int) -> list[Tensor]:
    """Every crop of the zero-padded image at every offset (textbook definition)."""
    p = F.pad(img, (pad, pad, pad, pad))
    h, w = img.shape[-2:]
    return [p[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]


def test_crop_shifts_reach_the_full_padding() -> None:
    """Over 40 draws, some training image is shifted by the whole 4-pixel padding (offset 0 or 8 in the padded image)."""
    model, data = Recorder(), _data(augment=True, flip=False)
    train(model, data, TrainConfig(epochs=4, batch_size=BS, lr=1e-12), seed=0, device=CPU)
    offsets = [(dy, dx) for dy in range(9) for dx in range(9)]
    crops = [_crops(img, 4) for img in data.x_train.float() / 255]
    shifts = {max(abs(dy - 4), abs(dx - 4)) for b in model.seen for img in b for cs in crops for (dy, dx), c in zip(offsets, cs) if torch.equal(img, c)}
    assert max(shifts) == 4


@pytest.mark.parametrize("flip", [True, False])
def test_training_images_are_augmented_as_the_data_asks(flip: bool) -> None:
    """augment=True: every image seen is a 4-padded crop (mirrored only when flip is on), and not all are the originals."""
    model = Recorder()
    data = _data(augment=True, flip=flip)
    train(model, data, TrainConfig(epochs=4, batch_size=BS, lr=1e-12), seed=0, device=CPU)
    originals = data.x_train.float() / 255
    plain = [_crops(img, 4) for img in originals]
    mirrored = [[c.flip(-1) for c in cs] for cs in plain]
    n_plain = n_mirror = n_moved = 0
    for batch in model.seen:
        for img in batch:
            is_plain = any(torch.equal(img, c) for cs in plain for c in cs)
            is_mirror = any(torch.equal(img, c) for cs in mirrored for c in cs)
            assert is_plain or is_mirror
            n_plain += is_plain
            n_mirror += is_mirror and not is_plain
            n_moved += not any(torch.equal(img, o) for o in originals)
    assert n_moved > 0
    assert (n_mirror > 0) == flip and n_plain > 0


def test_no_augmentation_when_the_data_asks_none() -> None:
    """augment=False: the model is trained on the very images given."""
    model, data = Recorder(), _data(augment=False)
    train(model, data, TrainConfig(epochs=2, batch_size=BS, lr=1e-12), seed=0, device=CPU)
    originals = data.x_train.float() / 255
    for batch in model.seen:
        for img in batch:
            assert any(torch.equal(img, o) for o in originals)


class _BNRecorder(nn.Module):
    """Conv, BatchNorm, linear head; records its mode at every forward pass."""

    def __init__(self) -> None:
        """Fixed weights, BN statistics away from their defaults."""
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * SIDE * SIDE, 3)
        self.bn.running_mean.fill_(0.3)
        self.bn.running_var.fill_(2.0)
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        """Record, then classify."""
        self.modes.append(self.training)
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_attacks_run_in_eval_mode_and_leave_bn_statistics_alone() -> None:
    """The clean pass and the attacks see the model in eval mode; BatchNorm's running statistics do not move."""
    model = _BNRecorder().train()
    data = _data()
    before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    run_attacks(model, data.x_train, data.y_train, (AttackSpec("fgsm", (0.05,)), AttackSpec("pgd_linf", (0.05,), (("steps", 2),))), CPU, 4, seed=0)
    assert model.modes and not any(model.modes)
    assert all(torch.equal(before[k], v) for k, v in model.bn.state_dict().items())
    assert model.training  # the caller's mode is restored


def _hand_evaluation(black_box: list[bool]) -> Evaluation:
    """Two white-box Linf attacks and one black-box one at eps 0.1, on four examples."""
    t, f = True, False
    ev = Evaluation(clean_correct=torch.tensor([t, t, t, t]))
    ev.robust = {("a", 0.1): torch.tensor([t, t, f, f]), ("b", 0.1): torch.tensor([t, f, t, f]), ("bb", 0.1): torch.tensor(black_box)}
    ev.threat = {"a": "linf", "b": "linf", "bb": "linf"}
    ev.white_box = {"a": True, "b": True, "bb": False}
    return ev


def test_white_box_worst_case_is_the_and_and_masking_compares_black_box_to_it() -> None:
    """Per example, robust only if every white-box attack failed; a black-box attack below that flags masking."""
    ev = _hand_evaluation([False, False, False, False])
    assert white_box_correct(ev, "linf", 0.1).tolist() == [True, False, False, False]
    assert masking_from_grid(ev) is True  # black box 0 % < white box 25 %
    assert masking_from_grid(_hand_evaluation([True, True, False, False])) is False  # 50 % >= 25 %


def test_flat_or_falling_eps_curve_is_not_flagged() -> None:
    """Robust accuracy equal or lower at the larger eps raises no eps_monotonic flag."""
    ev = Evaluation(clean_correct=torch.ones(4, dtype=torch.bool))
    ev.robust = {("a", 0.1): torch.tensor([True, True, False, False]), ("a", 0.2): torch.tensor([True, False, True, False]),
                 ("a", 0.3): torch.tensor([True, False, False, False])}
    assert [(m.metric, m.value) for m in eps_monotonic(ev)] == [("flag_eps_monotonic", 0.0)]


def test_sanity_slack_is_never_below_two_examples() -> None:
    """slack(n) = max(1 %, 2 / n)."""
    assert slack(10) == pytest.approx(0.2) and slack(1000) == pytest.approx(0.01) and slack(0) == pytest.approx(2.0)


@pytest.mark.parametrize(("after_apgd", "flagged"), [(6, False), (5, False), (3, True)])
def test_convergence_flags_pgd_only_where_autoattacks_apgd_stage_beats_it_by_more_than_the_slack(after_apgd: int, flagged: bool) -> None:
    """PGD leaves 6 of 10 robust; AutoAttack's APGD-CE stage leaves 6, 5 or 3: not converged only below 6 - 2 (slack = 2 examples)."""
    from harness.evaluation.sanity import convergence
    from tests.test_sanity import _aa_evaluation

    ev: Any = _aa_evaluation(after_square=3)
    ev.stages[("autoattack/apgd-ce", 0.1)] = torch.arange(10) < after_apgd
    ev.robust[("pgd_linf", 0.1)], ev.threat["pgd_linf"], ev.white_box["pgd_linf"] = torch.arange(10) < 6, "linf", True
    spec = AttackSpec("pgd_linf", (0.1,))
    out, folds = convergence(nn.Identity(), torch.zeros(10, 1, 2, 2), torch.zeros(10, dtype=torch.long), torch.arange(10), ev, (spec,), CPU, 10, seed=0)
    assert [(m.metric, m.value) for m in out] == [("flag_not_converged", float(flagged))]
    assert torch.equal(folds[("linf", 0.1)], torch.arange(10) < after_apgd)  # the stronger run's outcome is folded in
