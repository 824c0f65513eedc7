"""The accelerator data flow on the CPU: the compaction policies agree with the reference, out-of-memory retries,
the ball check as one reduction, and an AutoAttack that is never weaker than pyautoattack's."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from torch import Tensor, nn

from harness.api.config import AttackSpec, EvalConfig
from harness.api.data import ImageData, to_float
from harness.api.errors import AttackError
from harness.api.nets import frozen
from harness.api.plugins import attacks
from harness.attacks import autoattack as aa_module
from harness.attacks.apgd import apgd, apgd_targeted
from harness.attacks.common import COMPACT, MASKS, POLICY_ENV, forced_policy, policy_for
from harness.attacks.fab import fab
from harness.attacks.pgd import pgd
from harness.attacks.square import square_linf
from harness.evaluation.protocol import evaluate
from harness.evaluation.runs import (
    BatchSize,
    EvaluationError,
    attack_correct,
    eval_batch_size,
    run_attacks,
)

N = 48


@pytest.fixture(scope="module")
def xy(digits: ImageData) -> tuple[Tensor, Tensor]:
    """The first N digits test images and labels."""
    return to_float(digits.x_test[:N]), digits.y_test[:N]


def fooled(model: nn.Module, adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(adv).argmax(1) != y


def test_policy_per_device_and_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    assert policy_for(torch.device("cpu")).mode == COMPACT
    assert policy_for(torch.device("cuda")).mode == MASKS
    with forced_policy(MASKS):
        assert policy_for(torch.device("cpu")).mode == MASKS
    monkeypatch.setenv(POLICY_ENV, "masks")
    assert policy_for(torch.device("cpu")).mode == MASKS
    monkeypatch.setenv(POLICY_ENV, "sometimes")
    with pytest.raises(AttackError, match="not a compaction policy"):
        policy_for(torch.device("cpu"))
    monkeypatch.delenv(POLICY_ENV)
    # The accelerator reads the host only at a few steps; the CPU drops finished rows at every step.
    m, c = policy_for(torch.device("cuda")), policy_for(torch.device("cpu"))
    assert [i for i in range(40) if m.check_now(i)] == [1, 2, 4, 8, 16, 32]
    assert not any(m.drop_now(i) for i in range(40)) and all(c.drop_now(i) for i in range(1, 40))


def test_pgd_same_images_under_both_policies(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    with frozen(trained_cnn):
        compact = pgd(trained_cnn, x, y, 0.1, "linf", steps=10, seed=1, early_stop=True)
        with forced_policy(MASKS):
            masks = pgd(trained_cnn, x, y, 0.1, "linf", steps=10, seed=1, early_stop=True)
    assert torch.equal(compact, masks)
    assert 0 < int(fooled(trained_cnn, masks, y).sum()) < N


@pytest.mark.parametrize("norm,eps", [("Linf", 0.08), ("L2", 0.6)])
def test_apgd_masks_policy_is_the_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], norm: str, eps: float) -> None:
    x, y = xy
    with frozen(trained_cnn):
        ref = APGDAttack(trained_cnn, n_iter=20, norm=norm, eps=eps, seed=3, loss="ce", n_restarts=2, device="cpu").perturb(x, y)
        ref_t = APGDAttack_targeted(trained_cnn, n_iter=20, norm=norm, eps=eps, seed=1, n_target_classes=3, device="cpu").perturb(x, y)
        with forced_policy(MASKS):
            # Early stop on, but under masks fooled rows keep iterating as the reference's: its very images.
            ours = apgd(trained_cnn, x, y, eps, norm, "ce", n_iter=20, n_restarts=2, seed=3, early_stop=True)
            ours_t = apgd_targeted(trained_cnn, x, y, eps, norm, n_iter=20, n_target_classes=3, seed=1, early_stop=True)
    assert torch.equal(ours, ref)
    assert torch.equal(ours_t, ref_t)


def test_fab_masks_policy_is_the_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy[0][:32], xy[1][:32]
    ref_attack = FABAttack_PT(trained_cnn, norm="Linf", n_restarts=1, n_iter=12, eps=0.08, seed=2, targeted=True, n_target_classes=3, device="cpu")
    with frozen(trained_cnn), torch.random.fork_rng():
        ref = ref_attack.perturb(x, y)
        with forced_policy(MASKS):
            full = fab(trained_cnn, x, y, 0.08, "Linf", True, 12, 1, 3, seed=2, early_stop=False)
            early = fab(trained_cnn, x, y, 0.08, "Linf", True, 12, 1, 3, seed=2, early_stop=True)
    assert torch.equal(full, ref)  # two passes per step, no count read: the reference's arithmetic
    assert torch.equal(fooled(trained_cnn, early, y), fooled(trained_cnn, ref, y))


@pytest.mark.parametrize("policy", [COMPACT, MASKS])
def test_square_restarts_draw_the_reference_stream(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], policy: str) -> None:
    x, y = xy
    # eps where the first run fools some and not all: the second restart must start where the reference's stream is.
    ref_attack = SquareAttack(trained_cnn, norm="Linf", n_queries=120, eps=0.15, p_init=0.8, n_restarts=2, seed=5,
                              verbose=False, resc_schedule=False, device="cpu")
    with frozen(trained_cnn), torch.random.fork_rng():
        ref = ref_attack.perturb(x, y)
        with forced_policy(policy):
            ours = square_linf(trained_cnn, x, y, 0.15, 120, 0.8, 2, seed=5)
    assert torch.equal(ours, ref)


def test_square_generator_left_where_the_reference_is(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    from harness.attacks.square import square_linf_single_run

    x, y = xy[0][:8], xy[1][:8]
    with frozen(trained_cnn), torch.no_grad():
        # A budget that fools every example within a few queries: the run stops long before its 500 queries.
        with forced_policy(MASKS):
            gen_masks = torch.Generator().manual_seed(0)
            square_linf_single_run(trained_cnn, x, y, 0.5, 500, 0.8, gen_masks)
        gen_compact = torch.Generator().manual_seed(0)
        square_linf_single_run(trained_cnn, x, y, 0.5, 500, 0.8, gen_compact)
    # Masks notice "all fooled" later than compaction does, yet both leave the generator after the same draws.
    assert torch.equal(gen_masks.get_state(), gen_compact.get_state())
    assert not torch.equal(gen_compact.get_state(), torch.Generator().manual_seed(0).get_state())


class FailsAbove(nn.Module):
    """A model that raises the CPU allocator's error on batches larger than `limit` (an injected out-of-memory)."""

    def __init__(self, model: nn.Module, limit: int, message: str = "DefaultCPUAllocator: can't allocate memory") -> None:
        super().__init__()
        self.model, self.limit, self.message = model, limit, message
        self.sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise RuntimeError(f"{self.message}: you tried to allocate {len(x)} GB")
        return self.model(x)


def test_out_of_memory_halves_the_batch(trained_cnn: nn.Module, digits: ImageData) -> None:
    specs = (AttackSpec("pgd_linf", (0.1,), (("steps", 3),)), AttackSpec("deepfool", (0.5,), (("steps", 5),)))
    x, y = to_float(digits.x_test[:40]), digits.y_test[:40]
    small = FailsAbove(trained_cnn, 10).eval()
    ev = run_attacks(small, x, y, specs, torch.device("cpu"), 64, seed=0)
    assert ev.batch_size == 8  # 64 -> 32 -> 16 -> 8
    assert max(s for s in small.sizes if s <= 10) <= 8
    ref = run_attacks(trained_cnn, x, y, specs, torch.device("cpu"), 8, seed=0)
    assert torch.equal(ev.clean_correct, ref.clean_correct)
    for key in ref.robust:
        assert torch.equal(ev.robust[key], ref.robust[key]), key
    # The job records the batch size it ended with.
    data = ImageData("d", digits.x_train[:10], digits.y_train[:10], digits.x_test[:40], digits.y_test[:40], digits.classes, digits.mean, digits.std)
    metrics = evaluate(FailsAbove(trained_cnn, 20).eval(), data, EvalConfig(n_examples=30, batch_size=64, sanity_examples=0), specs[:1], torch.device("cpu"), 0)
    assert {m.metric: m.value for m in metrics}["eval_batch_size"] == 16.0


def test_out_of_memory_at_one_fails_the_job_and_other_errors_pass_through(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    spec = (AttackSpec("fgsm", (0.1,)),)
    with pytest.raises(EvaluationError, match="out of memory even one example at a time"):
        run_attacks(FailsAbove(trained_cnn, 0).eval(), x, y, spec, torch.device("cpu"), 16, seed=0)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_attacks(FailsAbove(trained_cnn, 2, "shape mismatch").eval(), x, y, spec, torch.device("cpu"), 16, seed=0)


def test_eval_batch_size_per_device() -> None:
    assert eval_batch_size(256, 1000, torch.device("cpu")) == 256
    assert eval_batch_size(256, 1000, torch.device("cuda")) == 1000
    assert eval_batch_size(2000, 1000, torch.device("cuda")) == 2000


class LateEscape:
    """An attack that stays in the ball on the first batch and leaves it on a later one."""

    threat_model, white_box = "linf", True

    def perturb_traced(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> tuple[Tensor, dict[str, Tensor]]:
        self.calls = getattr(self, "calls", 0) + 1
        return (x + (3 * eps if self.calls == 2 else 0.0)).clamp(0, 1), {}


def test_ball_check_reads_once_but_sees_every_batch(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    with pytest.raises(AttackError, match="exceeded its linf budget eps=0.05"):
        attack_correct(LateEscape(), "late", trained_cnn, x, y, 0.05, torch.device("cpu"), BatchSize(16))  # type: ignore[arg-type]


class TraceSaysFooled:
    """A multi-stage attack whose own check fooled every example, returning images a re-check calls correct."""

    threat_model, white_box = "linf", True

    def perturb_traced(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> tuple[Tensor, dict[str, Tensor]]:
        return x.clone(), {"only": torch.zeros(len(x), dtype=torch.bool)}


def test_robust_needs_both_the_trace_and_the_recheck(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    correct, stages = attack_correct(TraceSaysFooled(), "t", trained_cnn, x, y, 0.1, torch.device("cpu"), 16)  # type: ignore[arg-type]
    assert not bool(correct.any()) and not bool(stages["only"].any())


class BatchNoise(nn.Module):
    """A model whose logits move with the batch size, as kernels picked per batch size make them on a GPU."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        return logits + 1e-3 * len(x) * torch.arange(logits.shape[1], dtype=logits.dtype) / logits.shape[1]


def test_autoattack_exact_batches_when_the_model_is_not_batch_independent(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    from pyautoattack import AutoAttack as Reference

    assert aa_module.batch_independent(trained_cnn, xy[0])
    noisy = BatchNoise(trained_cnn).eval()
    assert not aa_module.batch_independent(noisy, xy[0])
    x, y = xy[0][:24], xy[1][:24]
    ours = attacks.get("autoattack").obj(version="standard", seed=0, n_queries=60)
    with frozen(noisy), torch.random.fork_rng():
        adv, trace = ours.perturb_traced(noisy, x, y, 0.05)
        ref = Reference(noisy, norm="Linf", eps=0.05, version="standard", seed=0)
        ref.square.n_queries = 60
        ref_adv, _ = ref.run_standard_evaluation(x, y, batch_size=len(y))
    # Every component saw the reference's batches: the very same robust examples.
    assert torch.equal(fooled(noisy, adv, y), fooled(noisy, ref_adv, y))


def test_autoattack_reruns_a_doubtful_success_as_the_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = xy[0][:24], xy[1][:24]
    real = aa_module.run_component
    calls: list[tuple[str, bool]] = []

    def borderline(aa, name, xs, ys, early_stop=True):  # type: ignore[no-untyped-def]
        calls.append((name, early_stop))
        adv = real(aa, name, xs, ys, early_stop)
        if name == "apgd-ce" and early_stop:
            # As if rounding in another batch had undone these successes: the image moved, the model is not fooled.
            changed = (adv != xs).flatten(1).any(1)
            adv = torch.where(changed.view(-1, 1, 1, 1), (xs + 1e-3).clamp(0, 1), adv)
        return adv

    monkeypatch.setattr(aa_module, "run_component", borderline)
    ours = attacks.get("autoattack").obj(version="standard", seed=0, n_queries=60)
    with frozen(trained_cnn), torch.random.fork_rng():
        _, trace = ours.perturb_traced(trained_cnn, x, y, 0.05)
    monkeypatch.setattr(aa_module, "run_component", real)
    with frozen(trained_cnn), torch.random.fork_rng():
        _, honest = ours.perturb_traced(trained_cnn, x, y, 0.05)
    assert ("apgd-ce", False) in calls  # re-run as the reference runs it
    assert torch.equal(trace["apgd-ce"], honest["apgd-ce"])  # and the successes are back


@pytest.mark.gpu
def test_autoattack_never_weaker_than_the_reference_on_a_gpu(trained_cnn: nn.Module, digits: ImageData) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from pyautoattack import AutoAttack as Reference

    device = torch.device("cuda")
    x, y = to_float(digits.x_test[:512]).to(device), digits.y_test[:512].to(device)
    model = trained_cnn.to(device)
    try:
        ours = attacks.get("autoattack").obj(version="standard", seed=0)
        with frozen(model), torch.random.fork_rng(devices=[device]):
            adv, trace = ours.perturb_traced(model, x, y, 0.05)
            ref = Reference(model, norm="Linf", eps=0.05, version="standard", seed=0, device=device)
            ref.logger.disabled = True
            ref_adv, _ = ref.run_standard_evaluation(x, y, batch_size=len(y))
        ref_robust = ~fooled(model, ref_adv, y)
        ours_robust = trace["square"] & ~fooled(model, adv, y)
        # Every component has work at this budget, and no example the reference broke is called robust here.
        assert [int(m.sum()) for m in trace.values()] == sorted((int(m.sum()) for m in trace.values()), reverse=True)
        assert int(trace["apgd-ce"].sum()) > int(ours_robust.sum())
        assert not bool((ours_robust & ~ref_robust).any())
    finally:
        trained_cnn.to("cpu")


def test_interrupted_evaluation_resumes_without_redoing_finished_attacks(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import harness.evaluation.runs as runs

    x, y = xy
    specs = (AttackSpec("fgsm", (0.05, 0.1)), AttackSpec("pgd_linf", (0.05,), (("steps", 5),)), AttackSpec("deepfool", (0.05, 0.1)))
    cpu = torch.device("cpu")
    whole = run_attacks(trained_cnn, x, y, specs, cpu, 64, seed=3)
    progress = tmp_path / "eval.partial.pt"
    real, saved = runs.atomic_write, []

    def killed_on_second_save(path, write):  # type: ignore[no-untyped-def]
        if saved:
            raise KeyboardInterrupt  # the session ends after FGSM at 0.05 was stored
        saved.append(path)
        return real(path, write)

    monkeypatch.setattr(runs, "atomic_write", killed_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        run_attacks(trained_cnn, x, y, specs, cpu, 64, seed=3, progress=progress)
    monkeypatch.setattr(runs, "atomic_write", real)
    stored = torch.load(progress, weights_only=False)["seconds"]
    calls = []
    real_correct = runs.attack_correct
    monkeypatch.setattr(runs, "attack_correct", lambda attack, name, *a, **k: calls.append((name, a[3])) or real_correct(attack, name, *a, **k))
    resumed = run_attacks(trained_cnn, x, y, specs, cpu, 64, seed=3, progress=progress)
    assert calls == [("fgsm", 0.1), ("pgd_linf", 0.05)]  # FGSM at 0.05 came from the file
    assert stored.keys() == {"fgsm"} and resumed.resumed_seconds == stored["fgsm"] > 0  # its time is counted, not lost
    assert resumed.robust.keys() == whole.robust.keys()
    assert all(torch.equal(resumed.robust[k], whole.robust[k]) for k in whole.robust)
    assert torch.equal(resumed.perturbation["deepfool"], whole.perturbation["deepfool"])
    # A file from other attacks (or another model: other clean outcomes) is ignored.
    other = run_attacks(trained_cnn, x, y, specs[:1], cpu, 64, seed=3, progress=progress)
    assert other.robust.keys() == {("fgsm", 0.05), ("fgsm", 0.1)}


def test_channels_last_evaluation_attacks_the_nhwc_model_and_matches_nchw(trained_cnn: nn.Module, digits: ImageData) -> None:
    """`[eval] channels_last`: every forward pass sees NHWC weights, outcomes agree with NCHW, the layout is restored."""
    seen: list[bool] = []
    original = trained_cnn.forward

    def spy(x: Tensor) -> Tensor:
        seen.append(all(p.is_contiguous(memory_format=torch.channels_last) for p in trained_cnn.parameters() if p.dim() == 4))
        return original(x)

    data = ImageData("d", digits.x_train[:10], digits.y_train[:10], digits.x_test[:60], digits.y_test[:60], digits.classes, digits.mean, digits.std)
    specs = (AttackSpec("fgsm", (0.1,)), AttackSpec("pgd_linf", (0.1,), (("steps", 5),)))
    cfg = EvalConfig(n_examples=40, batch_size=64, sanity_examples=0)
    nchw = {(m.metric, m.attack, m.eps): m.value for m in evaluate(trained_cnn, data, cfg, specs, torch.device("cpu"), 0)}
    trained_cnn.forward = spy  # type: ignore[method-assign]
    try:
        nhwc = {(m.metric, m.attack, m.eps): m.value for m in evaluate(trained_cnn, data, replace(cfg, channels_last=True), specs, torch.device("cpu"), 0)}
    finally:
        del trained_cnn.forward
    assert seen and all(seen)
    assert all(p.is_contiguous() for p in trained_cnn.parameters())
    accuracies = {k: v for k, v in nchw.items() if k[0].endswith("acc")}
    assert accuracies and all(nhwc[k] == v for k, v in accuracies.items())
