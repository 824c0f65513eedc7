"""Bringing your own dense model: `[train] checkpoint` files and folders, keys by content, checks, provenance, zoo."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import tomllib
import torch

from harness.api.config import (
    EvalConfig,
    FinetuneConfig,
    JobSpec,
    PrunerSpec,
    SGDConfig,
    TrainConfig,
    for_device,
)
from harness.api.data import ImageData
from harness.api.errors import CheckpointError, GridError
from harness.api.nets import Normalized
from harness.api.plugins import architectures
from harness.engine.artifacts import ArtifactCache
from harness.engine.checkpoints import export
from harness.engine.grid import parse_grid
from harness.engine.pipeline import dense_model, execute
from harness.evaluation.runs import accuracy
from harness.training.schedule import scheduler

CPU = torch.device("cpu")


def _fresh(digits: ImageData, seed: int) -> Normalized:
    """A seeded, untrained small_cnn: for tests that only need distinct weights."""
    torch.manual_seed(seed)
    return Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), digits.mean, digits.std).eval()


def _grid(checkpoint: str, seeds: tuple[int, ...] = (0,), pruners: tuple[str, ...] = ("none",), **train: Any) -> list[JobSpec]:
    raw = {
        "datasets": ["digits"], "architectures": ["small_cnn"], "pruners": list(pruners), "sparsities": [0.5], "seeds": list(seeds),
        "train": {"checkpoint": checkpoint, **train}, "finetune": {"epochs": 1, "batch_size": 64},
        "eval": {"n_examples": 40, "batch_size": 40, "measure_latency": False, "sanity_examples": 0, "reference": {"linf": ["fgsm"]}},
        "attacks": [{"name": "fgsm", "eps": [0.1]}],
    }
    return parse_grid(raw).jobs


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_state_dict_file_is_the_dense_model(digits: ImageData, trained_cnn: Normalized, tmp_path: Path) -> None:
    model = trained_cnn
    wrapped, bare = tmp_path / "wrapped.pt", tmp_path / "bare.pt"
    torch.save(model.state_dict(), wrapped)  # the harness's own format
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}}, bare)  # a training script's
    for path in (wrapped, bare):
        (job,) = _grid(str(path))
        dense, meta = dense_model(job, digits, ArtifactCache(tmp_path / f"cache-{path.stem}"), CPU)
        assert _same_weights(dense, model)
        clean = float(accuracy(model, digits.x_test, digits.y_test, CPU).float().mean())
        assert meta["dense_clean_accuracy"] == pytest.approx(clean) and clean > 0.5
        assert meta["train_seconds"] == 0.0 and meta["dense_test_examples"] == len(digits.y_test)


def test_folder_keyed_by_seed(digits: ImageData, tmp_path: Path) -> None:
    models = {s: _fresh(digits, s) for s in (0, 1)}
    folder = tmp_path / "dense"
    folder.mkdir()
    for s, m in models.items():
        torch.save(m.state_dict(), folder / f"seed{s}.pt")
    jobs = _grid(str(folder), seeds=[0, 1])
    assert jobs[0].dense_key != jobs[1].dense_key
    for job in jobs:
        dense, _ = dense_model(job, digits, ArtifactCache(tmp_path / "cache"), CPU)
        assert _same_weights(dense, models[job.seed])
    with pytest.raises(GridError, match=r"no seed2\.pt for seed 2 \(has: seed0\.pt, seed1\.pt\)"):
        _grid(str(folder), seeds=[0, 2])


def test_exported_cache_entry_loads_back(digits: ImageData, tmp_path: Path) -> None:
    """The publishing path (checkpoints/README.md): cache entry -> state dict file -> the same dense model."""
    model = _fresh(digits, 0)
    cache = ArtifactCache(tmp_path / "artifacts")
    out = tmp_path / "published" / "seed0.pt"
    sha = export(cache.save("dense", "somekey", model, {}), out)
    assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
    (job,) = _grid(str(out.parent))
    dense, _ = dense_model(job, digits, ArtifactCache(tmp_path / "fresh"), CPU)
    assert _same_weights(dense, model)


def test_wrong_architecture_is_one_clear_line(digits: ImageData, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "resnet20.pt"
    torch.save(architectures.get("resnet20").obj(num_classes=10, in_channels=1).state_dict(), path)
    (job,) = _grid(str(path))
    with pytest.raises(CheckpointError) as err:
        dense_model(job, digits, ArtifactCache(tmp_path / "cache"), CPU)
    msg = str(err.value)
    assert "\n" not in msg and "not a state dict for architecture 'small_cnn'" in msg and "missing" in msg
    for i, blob in enumerate([{"epoch": 3}, _fresh(digits, 0), b"not torch"]):  # no tensors; a pickled module; junk
        path.write_bytes(blob) if isinstance(blob, bytes) else torch.save(blob, path)
        (job,) = _grid(str(path))
        with pytest.raises(CheckpointError, match="not a (plain )?state dict") as err:
            dense_model(job, digits, ArtifactCache(tmp_path / f"cache{i}"), CPU)
        assert "\n" not in str(err.value)
    with pytest.raises(GridError, match="no such file or folder"):
        _grid(str(tmp_path / "absent.pt"))


def test_key_follows_content_not_path(digits: ImageData, tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "elsewhere" / "b.pt"
    b.parent.mkdir()
    torch.save(_fresh(digits, 0).state_dict(), a)
    shutil.copy(a, b)
    (ja,), (jb,) = _grid(str(a)), _grid(str(b))
    assert ja.dense_key == jb.dense_key and ja.key == jb.key  # moved or renamed: the same model, the same jobs
    assert ja.dense_params()["train"]["checkpoint"] == "sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()
    torch.save(_fresh(digits, 1).state_dict(), b)
    (jb2,) = _grid(str(b))
    assert jb2.dense_key != jb.dense_key  # same path, other weights: another model
    with pytest.raises(CheckpointError, match="changed since the grid was read"):
        dense_model(jb, digits, ArtifactCache(tmp_path / "cache"), CPU)


def test_provenance_and_metric(digits: ImageData, trained_cnn: Normalized, tmp_path: Path) -> None:
    path = tmp_path / "dense.pt"
    torch.save(trained_cnn.state_dict(), path)
    (job,) = _grid(str(path))
    metrics, prov = execute(job, digits, ArtifactCache(tmp_path / "cache"), CPU)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["dense_checkpoint"] == {"checkpoint": str(path), "file": str(path), "sha256": sha}
    values = {m.metric: m.value for m in metrics if not m.attack}
    assert 0.5 < values["dense_clean_accuracy"] <= 1.0 and values["train_seconds"] == 0.0


# Key material of the training configs before `schedule`, `warmup_epochs`, `checkpoint`, `model_dir` existed.
OLD_SGD_KEYS = {"epochs", "lr", "batch_size", "momentum", "weight_decay"}
OLD_EVAL_KEYS = {"n_examples", "batch_size", "measure_latency", "sanity_examples", "reference"}
OLD_TRAIN_KEYS = OLD_SGD_KEYS | {"n_train", "regime", "adv_eps", "adv_steps", "adv_step_size", "trades_beta"}


def test_new_options_leave_old_keys_alone() -> None:
    """At their defaults the new keys are not key material, so jobs stored before them keep their keys."""
    base = _job_with(TrainConfig())
    assert set(base.dense_params()["train"]) == OLD_TRAIN_KEYS
    assert set(_job_with(TrainConfig(), sparsity=0.5, pruner="l1_filter").pruned_params()["finetune"]) == OLD_SGD_KEYS
    assert _job_with(TrainConfig(warmup_epochs=1)).dense_key != base.dense_key
    assert _job_with(TrainConfig(schedule="onecycle")).dense_key != base.dense_key
    assert set(base.params()["eval"]) == OLD_EVAL_KEYS
    nhwc = replace(base, eval=EvalConfig(channels_last=True))
    assert nhwc.key != base.key and nhwc.pruned_key == base.pruned_key  # the evaluation changed, not the model


def _job_with(train: TrainConfig, sparsity: float = 0.0, pruner: str = "none") -> JobSpec:
    # Resolved as the runner resolves it on the CPU: fp32, the arithmetic every result before `precision` used.
    return for_device(JobSpec("digits", "small_cnn", 0, PrunerSpec(pruner), sparsity, train, FinetuneConfig(), EvalConfig(), ()), "cpu")


def _lrs(cfg: SGDConfig, steps_per_epoch: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr, momentum=0.9)
    sched, out = scheduler(opt, cfg, steps_per_epoch), []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_default_schedule_is_the_old_cosine() -> None:
    cfg = SGDConfig(epochs=3, lr=0.1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    old, want = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30), []
    for _ in range(30):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        old.step()
    assert _lrs(cfg, 10) == want  # bit for bit


def test_warmup_and_onecycle_shapes() -> None:
    warm = _lrs(SGDConfig(epochs=4, lr=0.1, warmup_epochs=1), 10)
    assert warm[0] == pytest.approx(0.01) and warm[9] == pytest.approx(0.1) and all(a < b for a, b in zip(warm[:9], warm[1:10]))
    assert all(a >= b for a, b in zip(warm[10:], warm[11:])) and warm[-1] < 0.001
    one = _lrs(SGDConfig(epochs=4, lr=0.1, schedule="onecycle", warmup_epochs=1), 10)
    assert one[0] == pytest.approx(0.1 / 25) and max(one) == pytest.approx(0.1, rel=1e-3) and one.index(max(one)) in (9, 10)
    assert one[-1] < 1e-3
    with pytest.raises(GridError, match="unknown schedule 'step'"):
        SGDConfig(schedule="step")
    with pytest.raises(GridError, match="warmup_epochs must be a number >= 0"):
        FinetuneConfig(epochs=2, warmup_epochs=-1)
    short = _lrs(SGDConfig(epochs=1, lr=0.1, warmup_epochs=3), 10)  # a warm-up longer than the run stops short of it
    assert short[0] == pytest.approx(0.1 / 9) and short[-1] == pytest.approx(0.1)


@pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="robustbench not installed (pip install 'harness[robustbench]')")
def test_robustbench_zoo_offline(tmp_path: Path) -> None:
    """Random WRN-28-10 weights where robustbench looks for 'Standard' load, through robustbench, as wrn28_10."""
    from harness.engine.checkpoints import load_dense
    from harness.engine.zoo import robustbench_load_model

    robustbench_load_model()  # the autoattack shim, then robustbench itself
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    torch.manual_seed(0)
    zoo_net = WideResNet(depth=28, widen_factor=10).eval()
    path = tmp_path / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save(zoo_net.state_dict(), path)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    data = ImageData("cifar10", x, torch.arange(4), x, torch.arange(4), [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)
    raw = {"datasets": ["cifar10"], "architectures": ["wrn28_10"], "pruners": ["none"], "attacks": [{"name": "fgsm", "eps": [0.01]}],
           "eval": {"reference": {"linf": ["fgsm"]}}, "train": {"checkpoint": "robustbench:cifar10/Linf/Standard", "model_dir": str(tmp_path)}}
    (job,) = parse_grid(raw).jobs
    assert job.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    model, meta = load_dense(job, data, CPU)
    with torch.inference_mode():
        assert torch.allclose(model(x.float() / 255), zoo_net(x.float() / 255), atol=1e-5)
    assert meta["checkpoint"]["sha256"] == job.checkpoint_sha256
    (wrong,) = parse_grid(raw | {"architectures": ["wrn28_4"]}).jobs
    with pytest.raises(CheckpointError, match="is not architecture 'wrn28_4'"):
        load_dense(wrong, data, CPU)
    with pytest.raises(GridError, match=r"Other\.pt not found; download it once"):
        parse_grid(raw | {"train": {"checkpoint": "robustbench:cifar10/Linf/Other", "model_dir": str(tmp_path)}})


def _grid_file(name: str) -> list[JobSpec]:
    """A built-in grid's jobs, without what only the protocol issue provides (`match`, `dense_finetuned`) when absent."""
    from harness.api.paths import GRIDS_DIR
    from harness.api.plugins import pruners

    raw = tomllib.loads((GRIDS_DIR / f"{name}.toml").read_text())
    if "dense_finetuned" not in pruners:
        raw.pop("match", None)
        raw["pruners"] = [p for p in raw["pruners"] if p != "dense_finetuned"]
    return parse_grid(raw, name=name).jobs


def test_study_grid_is_the_issues_setup() -> None:
    jobs = _grid_file("study")
    assert {(j.dataset, j.architecture, j.train.n_train) for j in jobs} == {("cifar10", "resnet20", None)}  # full CIFAR-10
    assert {j.seed for j in jobs} == {0, 1, 2} and {j.sparsity for j in jobs if j.pruner.name not in ("none", "dense_finetuned")} == {0.35, 0.46}
    names = {j.pruner.name for j in jobs}
    assert {"l1_filter", "hrank", "expected_abs", "kl_divergence", "pls_vip", "random_filter", "layer_pls_vip"} <= names
    eps = {a.name: set(a.eps) for a in jobs[0].attacks}
    assert eps.keys() == {"fgsm", "pgd_linf", "autoattack"} and all(e == {1 / 255, 2 / 255, 8 / 255} for e in eps.values())
    assert all(j.eval.n_examples >= 500 for j in jobs) and jobs[0].train.warmup_epochs > 0


def test_paper_gpu_grid_validates() -> None:
    jobs = _grid_file("paper-gpu")
    assert {j.architecture for j in jobs} == {"resnet56", "vgg16_bn"} and all(j.eval.n_examples >= 500 for j in jobs)


def test_model_dir_only_for_robustbench(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="model_dir applies only to checkpoint = 'robustbench:...'"):
        TrainConfig(checkpoint=str(tmp_path / "a.pt"), model_dir=str(tmp_path))
    with pytest.raises(GridError, match="checkpoint must be a path"):
        TrainConfig(checkpoint=3)  # type: ignore[arg-type]
    with pytest.raises(GridError, match="write robustbench:DATASET/THREAT/NAME"):
        _grid("robustbench:Standard")
