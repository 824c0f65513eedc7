"""Attack throughput (images/s) and robust accuracy: harness vs torchattacks vs pyautoattack, same model and data.

torchattacks pins an old `requests`, so it lives in the benchmark's own environment, not the project's:
    python -m venv --system-site-packages /tmp/bench-venv && /tmp/bench-venv/bin/pip install torchattacks
    /tmp/bench-venv/bin/python benchmarks/attacks.py --n 128
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from harness.data import to_float
from harness.evaluate import run_attacks
from harness.grid import AttackSpec, TrainConfig
from harness.nets import Normalized
from harness.plugins import architectures, datasets
from harness.train import train


def trained_model(epochs: int) -> tuple[nn.Module, Tensor, Tensor]:
    """small_cnn trained on the embedded digits data, and the test images."""
    data = datasets.get("digits").obj()
    torch.manual_seed(0)
    model = Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), data.mean, data.std)
    train(model, data, TrainConfig(epochs=epochs, batch_size=64, lr=0.05), seed=0, device=torch.device("cpu"))
    return model.eval(), to_float(data.x_test), data.y_test


def timed(fn: Callable[[], Tensor], model: nn.Module, y: Tensor, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` images/s of fn, and robust accuracy (fn returns adversarial images or a robust mask)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        adv = fn()
        best = min(best, time.perf_counter() - t0)
    if adv.dtype == torch.bool:
        return len(y) / best, float(adv.float().mean())
    with torch.no_grad():
        accuracy = float((model(adv).argmax(1) == y).float().mean())
    return len(y) / best, accuracy


def ours(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec) -> Callable[[], Tensor]:
    """The harness's evaluation path (clean-misclassified examples are not attacked, as in AutoAttack)."""

    def run() -> Tensor:
        ev = run_attacks(model, x, y, (spec,), torch.device("cpu"), len(y), seed=0)
        return ev.robust[(spec.name, spec.eps[0])]

    return run


def main() -> None:
    """Print one table: per attack and implementation, images/s, robust accuracy and speed ratio to ours."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=128, help="test images")
    ap.add_argument("--eps", type=float, default=0.1, help="Linf budget")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="timing repeats for FGSM and PGD (best taken)")
    ap.add_argument("--skip-autoattack", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, x_all, y_all = trained_model(args.epochs)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y, eps = x_all[: args.n], y_all[: args.n], args.eps
    import torchattacks
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack

    rows: list[tuple[str, str, float, float]] = []

    def add(attack: str, impl: str, fn: Callable[[], Tensor], repeats: int) -> None:
        ips, acc = timed(fn, model, y, repeats)
        rows.append((attack, impl, ips, acc))
        print(f"  {attack:12s} {impl:14s} {ips:10.1f} img/s  robust acc {acc:.4f}", flush=True)

    add("fgsm", "harness", ours(model, x, y, AttackSpec("fgsm", (eps,))), args.repeats)
    add("fgsm", "torchattacks", lambda: torchattacks.FGSM(model, eps=eps)(x, y), args.repeats)
    add("pgd10", "harness", ours(model, x, y, AttackSpec("pgd_linf", (eps,), (("steps", 10),))), args.repeats)
    add("pgd10", "torchattacks", lambda: torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)(x, y), args.repeats)
    apgd = APGDAttack(model, n_iter=10, norm="Linf", eps=eps, seed=0, loss="ce", n_restarts=1, device="cpu")
    add("pgd10", "pyautoattack-apgd10", lambda: apgd.perturb(x, y), args.repeats)
    if not args.skip_autoattack:
        add("autoattack", "harness", ours(model, x, y, AttackSpec("autoattack", (eps,))), 1)
        add("autoattack", "torchattacks", lambda: torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)(x, y), 1)
        ref = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
        add("autoattack", "pyautoattack", lambda: ref.run_standard_evaluation(x, y, batch_size=len(y))[0], 1)
    print(f"\n{torch.__version__}, {torch.get_num_threads()} threads, n={len(y)}, eps={eps}")
    print(f"{'attack':12s} {'impl':20s} {'img/s':>10s} {'robust acc':>11s} {'ours / impl':>12s}")
    base = {a: ips for a, impl, ips, _ in rows if impl == "harness"}
    for a, impl, ips, acc in rows:
        print(f"{a:12s} {impl:20s} {ips:10.1f} {acc:11.4f} {base[a] / ips:12.2f}")


if __name__ == "__main__":
    main()
