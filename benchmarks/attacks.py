"""Attack throughput (images/s) and robust accuracy: harness vs torchattacks vs pyautoattack, same model and data.

Every implementation is timed end to end from (model, x, y) to a robust-accuracy figure: the clean pass, the
attack, and the prediction on its output. Robust means correct both clean and attacked (the AutoAttack rule).
The images are a seeded random subset of the test set (the CIFAR-10 ImageFolder copy is sorted by class), put on
`--device` once before any timing; every implementation is warmed up on them first.

Attack efficiency = images/s x the forward+backward passes per image that the reference algorithm spends (counted
on the peer's run; a forward pass without a graph counts 1/3) / the raw forward+backward images/s of the same
model, batch and device, measured in the same run. 1.0 means "as fast as the card can run that many passes";
above 1.0 the harness skips work (early stop) that the reference does.

torchattacks pins an old `requests`, so it lives in the benchmark's own environment, not the project's:
    python -m venv --system-site-packages /tmp/bench-venv && /tmp/bench-venv/bin/pip install torchattacks
    PYTHONPATH=. /tmp/bench-venv/bin/python benchmarks/attacks.py                        # small_cnn, digits
    PYTHONPATH=. /tmp/bench-venv/bin/python benchmarks/attacks.py --model resnet20 --data-dir /tmp/cifar10
    PYTHONPATH=. /tmp/bench-venv/bin/python benchmarks/attacks.py --device cuda --model resnet20 --data-dir ... --n 1000
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.api.config import AttackSpec, TrainConfig
from harness.api.data import ImageData, subset, to_float
from harness.api.nets import Normalized
from harness.api.plugins import architectures, datasets
from harness.evaluation.runs import run_attacks
from harness.training.train import train

# HARNESS_BENCH_CACHE lets benchmarks/gpu_check.sh share one decoded dataset between its stages.
CACHE = Path(os.environ.get("HARNESS_BENCH_CACHE", "/tmp/harness-bench"))


def trained_model(epochs: int, arch: str = "small_cnn", dataset: str = "digits", data_dir: Path | None = None, n_train: int | None = None,
                  device: torch.device = torch.device("cpu")) -> tuple[nn.Module, Tensor, Tensor]:
    """`arch` trained on `dataset` on `device` (cached under CACHE between runs), and the test images (on the CPU)."""
    data: ImageData = datasets.get(dataset).obj(data_dir, CACHE / "data") if data_dir else datasets.get(dataset).obj()
    torch.manual_seed(0)
    model = Normalized(architectures.get(arch).obj(num_classes=data.num_classes, in_channels=data.in_channels), data.mean, data.std)
    # Keyed by device type: the CUDA run trains in bf16, so its weights differ from the CPU's.
    path = CACHE / f"{arch}-{dataset}-{epochs}-{n_train}-{device.type}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path))
    else:
        model.to(device)  # train() trains the model where it is
        train(model, data, TrainConfig(epochs=epochs, batch_size=128 if arch != "small_cnn" else 64, lr=0.05, n_train=n_train), seed=0, device=device)
        model.cpu()
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval(), to_float(data.x_test), data.y_test


def sync(device: torch.device) -> None:
    """Wait for the device's queue (timings must include the work, not just its launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Tensor], repeats: int, device: torch.device) -> tuple[float, float]:
    """Best-of-`repeats` images/s of fn (which returns a per-example robust mask) and its robust accuracy."""
    best, mask = float("inf"), torch.zeros(0)
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        mask = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return len(mask) / best, float(mask.float().mean())


class Counting(nn.Module):
    """The model, counting the images it sees with a graph (forward+backward) and without (forward only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.graph, self.plain = model, 0, 0

    def forward(self, x: Tensor) -> Tensor:
        """The model's logits, counting the batch as a graph pass or a plain one."""
        if torch.is_grad_enabled() and x.requires_grad:
            self.graph += len(x)
        else:
            self.plain += len(x)
        return self.model(x)

    def passes(self, n: int) -> float:
        """Forward+backward passes per image (a plain forward pass counts a third of one)."""
        return (self.graph + self.plain / 3) / max(n, 1)


def raw_fwd_bwd(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, repeats: int = 5) -> float:
    """Images/s of one forward+backward pass with respect to the input: the card's limit for gradient attacks."""
    def step() -> Tensor:
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
        return g
    step()
    return timed(lambda: step()[:, 0, 0, 0] == 0, repeats, device)[0]


def peer(model: nn.Module, x: Tensor, y: Tensor, attack: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], Tensor]:
    """A peer's path: clean pass, attack on every example, prediction on the adversarial images."""

    def run() -> Tensor:
        with torch.no_grad():
            clean = model(x).argmax(1) == y
        adv = attack(x, y)
        with torch.no_grad():
            return clean & (model(adv).argmax(1) == y)

    return run


def ours(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, device: torch.device) -> Callable[[], Tensor]:
    """The harness's evaluation path (clean-misclassified examples are not attacked, as in AutoAttack)."""

    def run() -> Tensor:
        ev = run_attacks(model, x, y, (spec,), device, len(y), seed=0)
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
    """Print one table: per attack and implementation, images/s, robust accuracy, our speed relative to it, efficiency."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["small_cnn", "resnet20"], default="small_cnn", help="small_cnn on digits, or resnet20 on CIFAR-10")
    ap.add_argument("--data-dir", type=Path, default=None, help="CIFAR-10 folder (torchvision files or ImageFolder) for resnet20")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (every implementation runs there, on tensors already there)")
    ap.add_argument("--n", type=int, default=128, help="test images (a seeded random subset)")
    ap.add_argument("--n-aa", type=int, default=None, help="test images for AutoAttack (default: --n)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random test subset")
    ap.add_argument("--eps", type=float, default=None, help="Linf budget (default 0.1 on digits, 2/255 on CIFAR-10)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 8 on digits, 4 on CIFAR-10)")
    ap.add_argument("--n-train", type=int, default=None, help="training subset (default all on digits, 20000 on CIFAR-10)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats for FGSM, PGD and APGD (best taken)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip-autoattack", action="store_true")
    ap.add_argument("--aa-peers", choices=["all", "pyautoattack"], default="all",
                    help="AutoAttack peers: pyautoattack alone saves two full AutoAttack runs on a short device lease")
    ap.add_argument("--skip-peers", action="store_true", help="time only the harness (e.g. to compare two versions of it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cifar = args.model == "resnet20"
    if cifar and args.data_dir is None:
        ap.error("--model resnet20 needs --data-dir with CIFAR-10")
    eps = args.eps if args.eps is not None else (2 / 255 if cifar else 0.1)
    epochs = args.epochs if args.epochs is not None else (4 if cifar else 8)
    n_train = args.n_train if args.n_train is not None else (20000 if cifar else None)
    model, x_all, y_all = trained_model(epochs, args.model, "cifar10" if cifar else "digits", args.data_dir, n_train, device)
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.to(device)
    x, y = (t.to(device) for t in subset(x_all, y_all, args.n, seed=args.seed))
    import torchattacks
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack

    rows: list[tuple[str, str, float, float, float]] = []
    passes: dict[str, float] = {}
    raw: dict[int, float] = {}

    def add(attack: str, impl: str, fn: Callable[[], Tensor], repeats: int, xs: Tensor, counted: Callable[[], Tensor] | None = None,
            warmup: Callable[[], Tensor] | None = None) -> None:
        if len(xs) not in raw:
            raw[len(xs)] = raw_fwd_bwd(model, xs, y_all.new_zeros(len(xs)).to(device), device)
        if counted is not None and attack not in passes:
            counter.graph = counter.plain = 0
            counted()
            passes[attack] = counter.passes(len(xs))
        (warmup or fn)()  # warm-up: allocator, kernels picked, lazy imports
        ips, acc = timed(fn, repeats, device)
        eff = ips * passes.get(attack, float("nan")) / raw[len(xs)]
        rows.append((attack, impl, ips, acc, eff))
        print(f"  {attack:10s} {impl:32s} {ips:10.1f} img/s  robust acc {acc:.4f}  efficiency {eff:.2f}", flush=True)

    counter = Counting(model).eval()  # torchattacks restores the mode it found: train mode would leak into the model
    with torch.no_grad():
        print(f"clean accuracy on the {len(y)} images: {float((model(x).argmax(1) == y).float().mean()):.4f}", flush=True)
    peers = not args.skip_peers
    add("fgsm", "harness", ours(model, x, y, AttackSpec("fgsm", (eps,)), device), args.repeats, x,
        peer(counter, x, y, torchattacks.FGSM(counter, eps=eps)))
    if peers:
        add("fgsm", "torchattacks", peer(model, x, y, torchattacks.FGSM(model, eps=eps)), args.repeats, x)
    tpgd_c = torchattacks.PGD(counter, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)
    add("pgd10", "harness (early stop, default)", ours(model, x, y, AttackSpec("pgd_linf", (eps,), (("steps", 10),)), device), args.repeats, x,
        peer(counter, x, y, tpgd_c))
    add("pgd10", "harness (last iterate)", ours(model, x, y, AttackSpec("pgd_linf", (eps,), (("early_stop", False), ("steps", 10))), device), args.repeats, x)
    if peers:
        tpgd = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)
        add("pgd10", "torchattacks", peer(model, x, y, tpgd), args.repeats, x)
    ref_apgd_c = APGDAttack(counter, n_iter=100, norm="Linf", eps=eps, seed=0, loss="ce", n_restarts=1, device=device)
    add("apgd100", "harness", ours(model, x, y, AttackSpec("apgd", (eps,), (("loss", "ce"), ("n_iter", 100))), device), args.repeats, x,
        peer(counter, x, y, ref_apgd_c.perturb))
    if peers:
        ref_apgd = APGDAttack(model, n_iter=100, norm="Linf", eps=eps, seed=0, loss="ce", n_restarts=1, device=device)
        add("apgd100", "pyautoattack", peer(model, x, y, ref_apgd.perturb), args.repeats, x)
        tapgd = torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0)
        add("apgd100", "torchattacks", peer(model, x, y, tapgd), args.repeats, x)
    if not args.skip_autoattack:
        n_aa = args.n_aa or args.n
        xa, ya = x[:n_aa], y[:n_aa]
        n_classes = int(y_all.max()) + 1

        def reference_aa(m: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
            ref = AutoAttack(m, norm="Linf", eps=eps, version="standard", seed=0, device=device)
            ref.logger.disabled = True
            return lambda a, b: ref.run_standard_evaluation(a, b, batch_size=len(b))[0]

        # AutoAttack warms up on 32 of its images: a full warm-up run would double its cost on a short device lease.
        xw, yw = xa[:32], ya[:32]
        aa_spec = AttackSpec("autoattack", (eps,))
        add("autoattack", "harness", ours(model, xa, ya, aa_spec, device), 1, xa, peer(counter, xa, ya, reference_aa(counter)),
            warmup=ours(model, xw, yw, aa_spec, device))
        if peers:
            add("autoattack", "pyautoattack", peer(model, xa, ya, reference_aa(model)), 1, xa, warmup=peer(model, xw, yw, reference_aa(model)))
        if peers and args.aa_peers == "all":
            tp = torchattacks_protocol_aa(model, eps, n_classes)
            add("autoattack", "torchattacks (AA settings)", peer(model, xa, ya, tp), 1, xa, warmup=peer(model, xw, yw, tp))
            taa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=n_classes, seed=0)
            add("autoattack", "torchattacks AutoAttack (10 it.)", peer(model, xa, ya, taa), 1, xa, warmup=peer(model, xw, yw, taa))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.model}, eps={eps:.5g}, n={len(y)} random test images (seed {args.seed}; AutoAttack n={args.n_aa or args.n}), torch {torch.__version__}, {where}")
    print("raw forward+backward img/s: " + ", ".join(f"batch {b}: {v:.0f}" for b, v in raw.items()))
    print("| attack | implementation | images/s | robust acc | harness speed / this | attack efficiency |")
    print("|---|---|---|---|---|---|")
    base = {a: ips for a, impl, ips, _, _ in rows if impl.startswith("harness") and "last iterate" not in impl}
    for a, impl, ips, acc, eff in rows:
        print(f"| {a} | {impl} | {ips:.1f} | {acc:.4f} | {base[a] / ips:.2f} | {eff:.2f} |")


if __name__ == "__main__":
    main()
