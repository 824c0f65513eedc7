"""Attack throughput (images/s) and robust accuracy: harness vs torchattacks vs pyautoattack, same model and data.

Every implementation is timed end to end from (model, x, y) to a robust-accuracy figure: the clean pass, the
attack, and the prediction on its output. Robust means correct both clean and attacked (the AutoAttack rule).

torchattacks pins an old `requests`, so it lives in the benchmark's own environment, not the project's:
    python -m venv --system-site-packages /tmp/bench-venv && /tmp/bench-venv/bin/pip install torchattacks
    PYTHONPATH=. /tmp/bench-venv/bin/python benchmarks/attacks.py                        # small_cnn, digits
    PYTHONPATH=. /tmp/bench-venv/bin/python benchmarks/attacks.py --model resnet20 --data-dir /tmp/cifar10
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.api.config import AttackSpec, TrainConfig
from harness.api.data import ImageData, to_float
from harness.api.nets import Normalized
from harness.api.plugins import architectures, datasets
from harness.evaluation.runs import run_attacks
from harness.training.train import train

CACHE = Path("/tmp/harness-bench")


def trained_model(epochs: int, arch: str = "small_cnn", dataset: str = "digits", data_dir: Path | None = None, n_train: int | None = None) -> tuple[nn.Module, Tensor, Tensor]:
    """`arch` trained on `dataset` (cached under /tmp between runs), and the test images."""
    data: ImageData = datasets.get(dataset).obj(data_dir, CACHE / "data") if data_dir else datasets.get(dataset).obj()
    torch.manual_seed(0)
    model = Normalized(architectures.get(arch).obj(num_classes=data.num_classes, in_channels=data.in_channels), data.mean, data.std)
    path = CACHE / f"{arch}-{dataset}-{epochs}-{n_train}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path))
    else:
        train(model, data, TrainConfig(epochs=epochs, batch_size=128 if arch != "small_cnn" else 64, lr=0.05, n_train=n_train), seed=0, device=torch.device("cpu"))
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval(), to_float(data.x_test), data.y_test


def timed(fn: Callable[[], Tensor], repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` images/s of fn (which returns a per-example robust mask) and its robust accuracy."""
    best, mask = float("inf"), torch.zeros(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        mask = fn()
        best = min(best, time.perf_counter() - t0)
    return len(mask) / best, float(mask.float().mean())


def peer(model: nn.Module, x: Tensor, y: Tensor, attack: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], Tensor]:
    """A peer's path: clean pass, attack on every example, prediction on the adversarial images."""

    def run() -> Tensor:
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        adv = attack(x, y)
        with torch.no_grad():
            return clean & (model(adv).argmax(1) == y)

    return run


def ours(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec) -> Callable[[], Tensor]:
    """The harness's evaluation path (clean-misclassified examples are not attacked, as in AutoAttack)."""

    def run() -> Tensor:
        ev = run_attacks(model, x, y, (spec,), torch.device("cpu"), len(y), seed=0)
        return ev.robust[(spec.name, spec.eps[0])]

    return run


def torchattacks_protocol_aa(model: nn.Module, eps: float, n_classes: int) -> Callable[[Tensor, Tensor], Tensor]:
    """torchattacks' components with AutoAttack's own settings (its `AutoAttack` defaults to 10 iterations, not 100)."""
    import torchattacks as ta

    multi = ta.MultiAttack([
        ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=n_classes, seed=0),
        ta.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=n_classes, seed=0),
        ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, resc_schedule=False, seed=0),
    ])
    return lambda x, y: multi(x, y)


def main() -> None:
    """Print one table: per attack and implementation, images/s, robust accuracy and our speed relative to it."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["small_cnn", "resnet20"], default="small_cnn", help="small_cnn on digits, or resnet20 on CIFAR-10")
    ap.add_argument("--data-dir", type=Path, default=None, help="CIFAR-10 folder (torchvision files or ImageFolder) for resnet20")
    ap.add_argument("--n", type=int, default=128, help="test images")
    ap.add_argument("--n-aa", type=int, default=None, help="test images for AutoAttack (default: --n)")
    ap.add_argument("--eps", type=float, default=None, help="Linf budget (default 0.1 on digits, 2/255 on CIFAR-10)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 8 on digits, 4 on CIFAR-10)")
    ap.add_argument("--n-train", type=int, default=None, help="training subset (default all on digits, 20000 on CIFAR-10)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats for FGSM and PGD (best taken)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip-autoattack", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cifar = args.model == "resnet20"
    if cifar and args.data_dir is None:
        ap.error("--model resnet20 needs --data-dir with CIFAR-10")
    eps = args.eps if args.eps is not None else (2 / 255 if cifar else 0.1)
    epochs = args.epochs if args.epochs is not None else (4 if cifar else 8)
    n_train = args.n_train if args.n_train is not None else (20000 if cifar else None)
    model, x_all, y_all = trained_model(epochs, args.model, "cifar10" if cifar else "digits", args.data_dir, n_train)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = x_all[: args.n], y_all[: args.n]
    import torchattacks
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack

    rows: list[tuple[str, str, float, float]] = []

    def add(attack: str, impl: str, fn: Callable[[], Tensor], repeats: int) -> None:
        ips, acc = timed(fn, repeats)
        rows.append((attack, impl, ips, acc))
        print(f"  {attack:10s} {impl:32s} {ips:10.1f} img/s  robust acc {acc:.4f}", flush=True)

    with torch.no_grad():
        print(f"clean accuracy on the {len(y)} images: {float((model(x).argmax(1) == y).float().mean()):.4f}", flush=True)
    add("fgsm", "harness", ours(model, x, y, AttackSpec("fgsm", (eps,))), args.repeats)
    add("fgsm", "torchattacks", peer(model, x, y, torchattacks.FGSM(model, eps=eps)), args.repeats)
    add("pgd10", "harness (early stop, default)", ours(model, x, y, AttackSpec("pgd_linf", (eps,), (("steps", 10),))), args.repeats)
    add("pgd10", "harness (last iterate)", ours(model, x, y, AttackSpec("pgd_linf", (eps,), (("early_stop", False), ("steps", 10)))), args.repeats)
    tpgd = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)
    add("pgd10", "torchattacks", peer(model, x, y, tpgd), args.repeats)
    add("apgd100", "harness", ours(model, x, y, AttackSpec("apgd", (eps,), (("loss", "ce"), ("n_iter", 100)))), args.repeats)
    ref_apgd = APGDAttack(model, n_iter=100, norm="Linf", eps=eps, seed=0, loss="ce", n_restarts=1, device="cpu")
    add("apgd100", "pyautoattack", peer(model, x, y, ref_apgd.perturb), args.repeats)
    tapgd = torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0)
    add("apgd100", "torchattacks", peer(model, x, y, tapgd), args.repeats)
    if not args.skip_autoattack:
        n_aa = args.n_aa or args.n
        xa, ya = x_all[:n_aa], y_all[:n_aa]
        n_classes = int(y_all.max()) + 1
        add("autoattack", "harness", ours(model, xa, ya, AttackSpec("autoattack", (eps,))), 1)
        ref = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
        ref.logger.disabled = True
        add("autoattack", "pyautoattack", peer(model, xa, ya, lambda a, b: ref.run_standard_evaluation(a, b, batch_size=len(b))[0]), 1)
        add("autoattack", "torchattacks (AA settings)", peer(model, xa, ya, torchattacks_protocol_aa(model, eps, n_classes)), 1)
        taa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=n_classes, seed=0)
        add("autoattack", "torchattacks AutoAttack (10 it.)", peer(model, xa, ya, taa), 1)
    print(f"\n{args.model}, eps={eps:.5g}, n={len(y)} (AutoAttack n={args.n_aa or args.n}), torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print("| attack | implementation | images/s | robust acc | harness speed / this |")
    print("|---|---|---|---|---|")
    base = {a: ips for a, impl, ips, _ in rows if impl.startswith("harness") and "last iterate" not in impl}
    for a, impl, ips, acc in rows:
        print(f"| {a} | {impl} | {ips:.1f} | {acc:.4f} | {base[a] / ips:.2f} |")


if __name__ == "__main__":
    main()
