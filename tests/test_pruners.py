"""Contract: every registered pruner x every architecture x two sparsities, on real tiny models and data."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.api.config import (
    DENSE_FAMILIES,
    EvalConfig,
    FinetuneConfig,
    JobSpec,
    PrunerSpec,
    TrainConfig,
)
from harness.api.data import ImageData, to_float
from harness.api.errors import PruningError
from harness.api.nets import Normalized, inner
from harness.api.plugins import architectures, pruners
from harness.api.pruner import PruneContext, prunable_convs
from harness.engine.artifacts import ArtifactCache
from harness.engine.grid import parse_grid
from harness.engine.pipeline import execute
from harness.evaluation.measure import count_macs, count_nonzero, count_params
from harness.pruning.layers import removable_blocks
from harness.training.train import train

SPARSITIES = (0.3, 0.6)
# Digit-sized (8x8) inputs keep these quick; everything else walks on CIFAR-shaped noise and is marked slow.
FAST_ARCHS = {"small_cnn", "resnet20"}
PRUNERS = [n for n in pruners.names() if pruners.get(n).obj.family not in DENSE_FAMILIES]


def _arch_params() -> list[object]:
    out = []
    for name in architectures.names():
        marks = () if name in FAST_ARCHS else (pytest.mark.slow,)
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def _context(arch: str, digits: ImageData, seed: int = 0) -> tuple[nn.Module, PruneContext]:
    """A freshly initialised model for `arch` and a context with two small calibration batches."""
    torch.manual_seed(seed)
    if arch in FAST_ARCHS:
        x, y = to_float(digits.x_train[:64]), digits.y_train[:64]
        mean, std, channels = digits.mean, digits.std, 1
    else:
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.rand(64, 3, 32, 32, generator=gen), torch.randint(0, 10, (64,), generator=gen)
        mean, std, channels = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 3
    net = architectures.get(arch).obj(num_classes=10, in_channels=channels)
    model = Normalized(net, mean, std).eval()
    # Two batches of 8 images: enough for every data-driven criterion, cheap for the per-channel KL one.
    ctx = PruneContext(example_inputs=x[:2], calibration=[(x[:8], y[:8]), (x[8:16], y[8:16])], seed=seed)
    return model, ctx


def _prune(name: str, arch: str, sparsity: float, digits: ImageData) -> tuple[nn.Module, nn.Module, PruneContext, object]:
    model, ctx = _context(arch, digits)
    dense = copy.deepcopy(model)
    cls = pruners.get(name).obj
    # Data-driven criteria get a small image budget here, the choice being theirs to expose; KL costs one forward of
    # every image per channel (288 s per MobileNetV2 prune with 4 images on 2 cores), so it gets a single image.
    images = 1 if name == "kl_divergence" else 4
    pruner = cls(images=images) if "images" in inspect.signature(cls).parameters else cls()
    pruned = pruner.finalize(pruner.prune(model, sparsity, ctx)).eval()
    return dense, pruned, ctx, pruner


@pytest.mark.parametrize("arch", _arch_params())
@pytest.mark.parametrize("name", PRUNERS)
def test_pruner_contract(name: str, arch: str, digits: ImageData) -> None:
    """The model still runs with the same output shape, reaches the request, and costs less."""
    cls = pruners.get(name).obj
    if not prunable_convs(architectures.get(arch).obj(num_classes=10, in_channels=3)):
        pytest.skip(f"{arch} has no prunable convs")
    if cls.family == "layer" and not removable_blocks(architectures.get(arch).obj(num_classes=10, in_channels=3)):
        with pytest.raises(PruningError, match="has none"):
            _prune(name, arch, SPARSITIES[0], digits)
        return
    for sparsity in SPARSITIES:
        dense, pruned, ctx, pruner = _prune(name, arch, sparsity, digits)
        x = ctx.example_inputs
        with torch.no_grad():
            assert pruned(x).shape == dense(x).shape
        achieved = pruner.achieved_sparsity(dense, pruned)  # type: ignore[attr-defined]
        assert abs(achieved - sparsity) <= pruner.tolerance(dense) + 1e-9, (achieved, sparsity)  # type: ignore[attr-defined]
        if cls.structured:
            assert count_params(pruned) < count_params(dense)
            assert count_macs(pruned, x) < count_macs(dense, x)
        else:
            assert count_params(pruned) == count_params(dense)
            assert count_nonzero(pruned) < count_nonzero(dense)
    # Same seed, same pruned model (checked at the larger sparsity, the last one pruned above).
    _, again, _, _ = _prune(name, arch, SPARSITIES[-1], digits)
    a, b = pruned.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_filter_sparsity_counts_filters_exactly(digits: ImageData) -> None:
    """Local filter pruning removes round(s x n) filters from every plain conv layer."""
    dense, pruned, _, _ = _prune("l1_filter", "small_cnn", 0.3, digits)
    before = [m.out_channels for m in prunable_convs(inner(dense))]
    after = [m.out_channels for m in prunable_convs(inner(pruned))]
    assert after == [n - round(0.3 * n) for n in before]


@pytest.mark.parametrize("name", ["l1_filter", pytest.param("hrank", marks=pytest.mark.slow), pytest.param("taylor", marks=pytest.mark.slow)])
def test_iterative_schedule_fine_tunes_between_steps(name: str, digits: ImageData) -> None:
    """An iterative schedule prunes in `steps` steps, fine-tuning between them, and ends at the request."""
    model, ctx = _context("resnet20", digits)
    dense = copy.deepcopy(model)
    calls: list[int] = []

    def fine_tune(m: nn.Module, step: int) -> None:
        calls.append(step)
        train(m, digits, TrainConfig(epochs=1, batch_size=128, lr=0.01), seed=step, device=torch.device("cpu"), n_train=128)

    ctx.fine_tune = fine_tune
    pruner = pruners.get(name).obj(schedule="iterative", steps=3)
    pruned = pruner.prune(model, 0.5, ctx)
    assert calls == [0, 1]
    assert abs(pruner.achieved_sparsity(dense, pruned) - 0.5) <= pruner.tolerance(dense)


def test_global_ranking_differs_from_local_and_still_reaches_the_request(digits: ImageData) -> None:
    """Global ranking lets layers lose different fractions, but the total stays at the request."""
    model, ctx = _context("small_cnn", digits)
    dense = copy.deepcopy(model)
    for conv in prunable_convs(inner(model))[:1]:
        conv.weight.data *= 1000  # the first layer's filters now outrank everything: global keeps them all
    pruner = pruners.get("l1_filter").obj(global_ranking=True)
    pruned = pruner.prune(model, 0.3, ctx)
    assert prunable_convs(inner(pruned))[0].out_channels == prunable_convs(inner(dense))[0].out_channels
    assert abs(pruner.achieved_sparsity(dense, pruned) - 0.3) <= pruner.tolerance(dense)


def test_bad_requests_fail_clearly(digits: ImageData) -> None:
    """Out-of-range sparsity, unknown schedule and a sparsity that removes no block all raise PruningError."""
    model, ctx = _context("resnet20", digits)
    with pytest.raises(PruningError, match=r"\[0, 1\)"):
        pruners.get("l1_filter").obj().prune(model, 1.0, ctx)
    with pytest.raises(PruningError, match="schedule"):
        pruners.get("l1_filter").obj(schedule="cyclic")
    with pytest.raises(PruningError, match="removes no block"):
        pruners.get("layer_l1").obj().prune(model, 0.05, ctx)
    ctx.calibration = []
    with pytest.raises(PruningError, match="calibration"):
        pruners.get("hrank").obj().prune(model, 0.3, ctx)


@pytest.mark.slow
def test_pipeline_runs_one_pruner_of_each_family(digits: ImageData, tmp_path: Path) -> None:
    """Through the real pipeline (prune, fine-tune, finalize, sparsity check, cost metrics)."""
    raw = {
        "name": "families",
        "datasets": ["digits"],
        "architectures": ["resnet20"],
        "pruners": ["l1_filter", "layer_l1", "global_magnitude"],
        "sparsities": [0.3],
        "train": {"epochs": 1, "batch_size": 128, "n_train": 256},
        "finetune": {"epochs": 1, "batch_size": 128},
        # FGSM is this test's only attack, so it is named the reference: the pipeline's cost metrics are under test.
        "eval": {"n_examples": 32, "batch_size": 32, "measure_latency": False, "reference": {"linf": ["fgsm"]}},
        "attacks": [{"name": "fgsm", "eps": [0.1]}],
    }
    cache = ArtifactCache(tmp_path)
    for job in parse_grid(raw).jobs:
        metrics = {m.metric: m.value for m in execute(job, digits, cache, torch.device("cpu"))[0] if not m.attack}
        assert abs(metrics["sparsity_achieved"] - 0.3) < 0.1
        if job.pruner.name == "global_magnitude":
            assert metrics["params_ratio"] == 1.0 and metrics["nonzero_params_ratio"] < 0.75
        else:
            assert metrics["params_ratio"] < 1.0 and metrics["macs_ratio"] < 1.0


# One pruner per unit (filters, blocks, weights) on the paper's networks, in the default suite: 16x16 inputs keep
# VGG-16-BN, ResNet-56 and MobileNetV2 quick while every layer, shortcut and depthwise conv is still pruned.
PAPER_ARCHS = ("vgg16_bn", "resnet56", "mobilenetv2")


@pytest.mark.parametrize("arch", PAPER_ARCHS)
@pytest.mark.parametrize("name", ["l1_filter", "layer_l1", "layer_magnitude"])
def test_harness_pruners_on_paper_networks(name: str, arch: str) -> None:
    """The harness's own pruners reach the request on the paper's networks, and the pruned model still runs."""
    from harness.engine.pipeline import check_sparsity

    torch.manual_seed(0)
    net = architectures.get(arch).obj(num_classes=10, in_channels=3)
    if pruners.get(name).obj.family == "layer" and not removable_blocks(net):
        pytest.skip(f"{arch} has no removable blocks (VGG)")
    model = Normalized(net, (0.5,) * 3, (0.25,) * 3).eval()
    dense = copy.deepcopy(model)
    x = torch.rand(2, 3, 16, 16)
    pruner = pruners.get(name).obj()
    pruned = pruner.finalize(pruner.prune(model, 0.5, PruneContext(example_inputs=x, seed=0))).eval()
    job = JobSpec("cifar10", arch, 0, PrunerSpec(name), 0.5, TrainConfig(), FinetuneConfig(), EvalConfig(), ())
    achieved = check_sparsity(job, pruner, dense, pruned)  # raises when the request is missed beyond rounding
    assert abs(achieved - 0.5) < 0.1
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)
    if pruner.structured:
        assert count_params(pruned) < count_params(dense)
