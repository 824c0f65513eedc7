"""Training regimes: config validation, and adversarial training that really buys PGD robustness on digits."""

from __future__ import annotations

import pytest
import torch

from harness.api.config import TrainConfig
from harness.api.data import ImageData
from harness.api.errors import GridError
from harness.api.nets import Normalized, frozen
from harness.api.plugins import architectures, attacks
from harness.engine.grid import parse_grid
from harness.evaluation.runs import accuracy
from harness.training.train import adversarial_budget, train

CPU = torch.device("cpu")
# Small enough for the default run (a few CPU seconds per model): 500 training digits, 4 epochs, 3-step
# training attacks with step eps/2 so that 3 steps reach the budget's edge, 200 attacked test digits.
N_TRAIN, EPOCHS, EPS, N_TEST = 500, 4, 0.1, 200


def _trained(digits: ImageData, regime: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), digits.mean, digits.std)
    adv = {"adv_steps": 3, "adv_step_size": EPS / 2} if regime != "standard" else {}
    cfg = TrainConfig(epochs=EPOCHS, batch_size=64, lr=0.05, n_train=N_TRAIN, regime=regime, **adv)
    train(model, digits, cfg, seed=0, device=CPU, n_train=N_TRAIN)
    return model.eval()


def _pgd_accuracy(model: torch.nn.Module, digits: ImageData) -> float:
    """Robust accuracy under 10-step PGD at the dataset's Linf budget."""
    x, y = digits.x_test[:N_TEST], digits.y_test[:N_TEST]
    x_adv = attacks.get("pgd_linf").obj(steps=10, seed=1).perturb(model, x, y, EPS)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def standard_model(digits: ImageData) -> torch.nn.Module:
    """small_cnn trained on clean digits."""
    return _trained(digits, "standard")


def test_pgd_at_raises_pgd_robust_accuracy(digits: ImageData, standard_model: torch.nn.Module) -> None:
    robust = _trained(digits, "pgd_at")
    std_acc, at_acc = _pgd_accuracy(standard_model, digits), _pgd_accuracy(robust, digits)
    assert at_acc > std_acc + 0.15, (std_acc, at_acc)
    assert float(accuracy(robust, digits.x_test, digits.y_test, CPU).float().mean()) > 0.7  # still a classifier


def test_trades_raises_pgd_robust_accuracy(digits: ImageData, standard_model: torch.nn.Module) -> None:
    robust = _trained(digits, "trades")
    assert _pgd_accuracy(robust, digits) > _pgd_accuracy(standard_model, digits) + 0.1


def test_regime_validation_and_fractions() -> None:
    cfg = TrainConfig(regime="pgd_at", adv_eps="8/255", adv_step_size="2/255", adv_steps=10)
    assert cfg.adv_eps == pytest.approx(8 / 255) and cfg.adv_step_size == pytest.approx(2 / 255)
    with pytest.raises(GridError, match="unknown regime 'madry'; accepted: standard, pgd_at, trades"):
        TrainConfig(regime="madry")
    with pytest.raises(GridError, match="adv_steps only apply to adversarial regimes"):
        TrainConfig(adv_steps=10)
    with pytest.raises(GridError, match="adv_steps must be an integer >= 1"):
        TrainConfig(regime="trades", adv_steps=0)


def test_grid_regime_errors_name_the_grid_and_change_the_dense_key() -> None:
    base = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["none"], "attacks": [{"name": "autoattack", "eps": 0.1}]}
    with pytest.raises(GridError, match=r"grid <memory>: \[train\]: unknown regime"):
        parse_grid(base | {"train": {"regime": "at"}})
    std = parse_grid(base).jobs[0]
    at = parse_grid(base | {"train": {"regime": "pgd_at", "adv_eps": "8/255"}}).jobs[0]
    assert std.dense_key != at.dense_key


def test_budget_defaults_to_the_dataset(digits: ImageData) -> None:
    assert adversarial_budget(TrainConfig(regime="pgd_at"), digits) == (digits.eps_linf, digits.eps_linf / 4)
    assert adversarial_budget(TrainConfig(regime="pgd_at", adv_eps=0.2, adv_step_size=0.05), digits) == (0.2, 0.05)


def test_attacking_freezes_weights_and_keeps_bn_statistics(digits: ImageData) -> None:
    model = Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), digits.mean, digits.std).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    with frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        model(digits.x_train[:32])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(bn.running_mean, before)


# ---- the training engine on any device ----


def _cifar_like(n: int = 192, size: int = 12) -> ImageData:
    """Random uint8 RGB images with augmentation on: the CIFAR code path at a test's size."""
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageData("fake", x, y, x[:32], y[:32], [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3, augment=True)


def _fresh_cnn(in_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=in_channels), (0.5,) * in_channels, (0.25,) * in_channels)


def test_every_draw_uses_trains_generator_on_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA failure (a CUDA generator drawing CPU tensors) must be impossible by construction: every draw that
    train() makes with a generator is made on that generator's device, named explicitly, and the shuffle,
    augmentation and TRADES noise all come from the very generator objects train() built for the run's device."""
    import harness.training.train as train_mod

    built: list[torch.Generator] = []
    real_gen = train_mod.run_generator

    def spy_gen(device: torch.device, seed: int) -> torch.Generator:
        g = real_gen(device, seed)
        assert g.device == device
        built.append(g)
        return g

    draws: list[tuple[str, torch.Generator, object]] = []

    def spy(name: str):  # type: ignore[no-untyped-def]
        real = getattr(torch, name)

        def draw(*args, **kwargs):  # type: ignore[no-untyped-def]
            gen = kwargs.get("generator")
            if gen is not None:
                draws.append((name, gen, kwargs.get("device")))
            return real(*args, **kwargs)

        return draw

    data = _cifar_like()
    monkeypatch.setattr(train_mod, "run_generator", spy_gen)
    for name in ("randint", "rand", "randn", "randperm"):
        monkeypatch.setattr(torch, name, spy(name))
    for regime, extra in (("trades", {"adv_steps": 1}), ("pgd_at", {"adv_steps": 1}), ("standard", {})):
        train(_fresh_cnn(), data, TrainConfig(epochs=1, batch_size=64, lr=0.05, regime=regime, **extra), seed=1, device=CPU, n_train=128)
    assert len(built) == 3
    for name, gen, device in draws:
        assert device is not None and torch.device(device) == gen.device, (name, device, gen.device)  # type: ignore[arg-type]
    from_train = {name for name, gen, _ in draws if any(gen is b for b in built)}
    assert from_train == {"randperm", "randint", "rand", "randn"}  # shuffle, crop offsets, flips, TRADES noise


def test_augment_batch_is_crop_and_flip() -> None:
    """One gather equals the textbook per-image crop of the zero-padded image, mirrored where the coin says so."""
    from harness.training.augment import augment_batch
    from harness.training.train import run_generator

    x = _cifar_like(n=16, size=8).x_train
    out = augment_batch(x, run_generator(CPU, 3), pad=2)
    g = run_generator(CPU, 3)  # the same draws, in augment_batch's order
    dx, dy = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], crop.flip(2) if flips[i] else crop), i
    assert 0 < int(flips.sum()) < 16  # both branches exercised
    assert out.dtype == torch.uint8  # augmented before conversion: the device holds uint8
    as_float = augment_batch(x.float() / 255, run_generator(CPU, 3), pad=2)
    assert torch.equal(as_float, out.float() / 255)


def test_same_seed_same_model_and_throughput_reported() -> None:
    data = _cifar_like()
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05)
    a, b = _fresh_cnn(), _fresh_cnn()
    ra, rb = train(a, data, cfg, seed=4, device=CPU, n_train=160), train(b, data, cfg, seed=4, device=CPU, n_train=160)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert ra.loss == rb.loss and ra.images == 2 * 160 and ra.img_per_s > 0


def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import harness.training.train as training

    data = _cifar_like()
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, schedule="cosine", warmup_epochs=1)
    whole = _fresh_cnn()
    train(whole, data, cfg, seed=4, device=CPU, n_train=160)
    progress = tmp_path / "dense.partial.pt"
    saves = []
    real = training.atomic_write

    def killed_after_first_epoch(path, write):  # type: ignore[no-untyped-def]
        if saves:
            raise KeyboardInterrupt  # the session ends while epoch 2 is being saved
        saves.append(path)
        return real(path, write)

    monkeypatch.setattr(training, "atomic_write", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_fresh_cnn(), data, cfg, seed=4, device=CPU, n_train=160, progress=progress)
    assert saves == [progress] and progress.is_file()
    monkeypatch.setattr(training, "atomic_write", real)
    resumed = _fresh_cnn()  # a new process: fresh weights, the progress file on disk
    saved_seconds = torch.load(progress, weights_only=False)["seconds"]
    res = train(resumed, data, cfg, seed=4, device=CPU, n_train=160, progress=progress)
    assert res.images == 2 * 160  # epochs 2 and 3 only
    assert saved_seconds > 0 and res.earlier_seconds == saved_seconds  # the interrupted call's time is not lost
    assert all(torch.equal(p, q) for p, q in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert not progress.exists()  # finished: the cache holds the model, not the partial state
    # Progress saved under other settings is ignored, never loaded into the wrong run.
    other = _fresh_cnn()
    torch.save({"fingerprint": {"other": 1}, "epoch": 2}, progress)
    assert train(other, data, cfg, seed=4, device=CPU, n_train=160, progress=progress).images == 3 * 160


def test_bf16_autocast_trains_and_differs_from_fp32() -> None:
    data = _cifar_like()
    runs = {}
    for precision in ("fp32", "bf16"):
        model = _fresh_cnn()
        res = train(model, data, TrainConfig(epochs=2, batch_size=64, lr=0.05, precision=precision), seed=0, device=CPU, n_train=128)
        assert res.loss == res.loss and res.loss < 10  # finite
        runs[precision] = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    diff = (runs["fp32"] - runs["bf16"]).abs().max()
    assert 0 < diff < 0.5  # bf16 arithmetic really ran, and trained the same model up to rounding


def test_channels_last_path_matches_nchw_and_restores_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drive the NHWC path the GPU takes on the CPU: same model up to float noise, usual layout afterwards."""
    import harness.training.train as train_mod

    data = _cifar_like()
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)
    nchw = _fresh_cnn()
    train(nchw, data, cfg, seed=0, device=CPU, n_train=128)
    monkeypatch.setattr(train_mod, "uses_channels_last", lambda model, device, precision="fp32": True)
    nhwc = _fresh_cnn()
    train(nhwc, data, cfg, seed=0, device=CPU, n_train=128)
    for (name, p), q in zip(nhwc.named_parameters(), nchw.parameters()):
        assert p.is_contiguous(), name
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_channels_last_decided_per_architecture() -> None:
    from harness.training.train import uses_channels_last

    cuda = torch.device("cuda")
    assert uses_channels_last(architectures.get("resnet20").obj(), cuda)
    assert uses_channels_last(architectures.get("vgg16_bn").obj(), cuda)
    assert not uses_channels_last(architectures.get("mobilenetv2").obj(), cuda)  # depthwise: slower in NHWC
    assert not uses_channels_last(architectures.get("resnet20").obj(), CPU)  # fp32 CPU numbers as in earlier releases
    assert uses_channels_last(architectures.get("resnet20").obj(), CPU, "bf16")
    assert not uses_channels_last(architectures.get("mobilenetv2").obj(), CPU, "bf16")


def test_precision_setting_resolved_per_device_and_keyed() -> None:
    from dataclasses import asdict

    from harness.api.config import MODEL_PROTOCOL, for_device
    from harness.api.keys import key_of

    with pytest.raises(GridError, match=r"\[finetune\]: unknown precision 'fp16'; accepted: auto, bf16, fp32"):
        parse_grid(_BASE | {"finetune": {"precision": "fp16"}})
    job = parse_grid(_BASE | {"pruners": ["l1_filter"]}).jobs[0]
    cpu, cuda = for_device(job, "cpu"), for_device(job, "cuda")
    assert (cpu.train.precision, cpu.finetune.precision, cuda.train.precision) == ("fp32", "fp32", "bf16")
    assert cpu.dense_key != cuda.dense_key and cpu.pruned_key != cuda.pruned_key and cpu.key != cuda.key
    # fp32 was the only arithmetic before the setting existed: its keys are the keys results were stored under.
    old = {k: v for k, v in asdict(cpu.train).items() if k not in ("precision", "schedule", "warmup_epochs", "checkpoint", "model_dir")}
    assert cpu.dense_key == key_of({"protocol": MODEL_PROTOCOL, "dataset": "digits", "architecture": "small_cnn", "seed": 0, "train": old})
    explicit = parse_grid(_BASE | {"pruners": ["l1_filter"], "train": {"precision": "bf16"}}).jobs[0]
    assert for_device(explicit, "cpu").train.precision == "bf16"  # a concrete choice is kept on any device


_BASE = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["none"], "attacks": [{"name": "autoattack", "eps": 0.1}]}
