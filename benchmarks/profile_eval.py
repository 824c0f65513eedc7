"""Where one evaluation job's time goes: `evaluate()` under cProfile, every built-in attack.

By default small_cnn on digits at digits-sized budgets; with `--grid gpu-check --data-dir DIR` one job of that grid
(ResNet-20, CIFAR-10, its eval settings and attack list), trained on `--device` for `--epochs` on `--n-train` images.

    PYTHONPATH=. python benchmarks/profile_eval.py [--n 128] [--device cpu] [--top 15]
    PYTHONPATH=. python benchmarks/profile_eval.py --grid gpu-check --data-dir DIR --device cuda

Prints the wall time per attack (`attack_seconds`), the sanity checks' share, and the functions with the most own
time. Run it on two versions of the harness to compare before and after.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.attacks import CACHE, trained_model
from harness.api.config import AttackSpec, EvalConfig
from harness.api.plugins import datasets
from harness.engine.grid import load_grid
from harness.evaluation.protocol import evaluate

# The full grid's attacks at digits-sized budgets (AutoAttack with 1000 Square queries to keep the run short).
SPECS = (
    AttackSpec("fgsm", (0.05, 0.1)),
    AttackSpec("pgd_linf", (0.05, 0.1), (("steps", 20),)),
    AttackSpec("pgd_l2", (1.0,), (("steps", 20),)),
    AttackSpec("apgd", (0.1,), (("loss", "dlr"),)),
    AttackSpec("cw_l2", (1.0,)),
    AttackSpec("deepfool", (1.0,)),
    AttackSpec("square", (0.1,), (("n_queries", 1000),)),
    AttackSpec("autoattack", (0.1,), (("n_queries", 1000),)),
)


def main() -> None:
    """Profile one evaluate() call and print the breakdown."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128, help="evaluation examples")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--grid", default=None, help="profile the first job's evaluation of this grid (its dataset must be cifar10)")
    ap.add_argument("--data-dir", type=Path, default=None, help="CIFAR-10 folder, with --grid")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs of the profiled model, with --grid")
    ap.add_argument("--n-train", type=int, default=20000, help="training subset, with --grid")
    args = ap.parse_args()
    device = torch.device(args.device)
    specs: tuple[AttackSpec, ...] = SPECS
    if args.grid:
        job = load_grid(args.grid).jobs[0]
        if job.dataset != "cifar10" or args.data_dir is None:
            ap.error("--grid needs a CIFAR-10 grid and --data-dir")
        model, _, _ = trained_model(args.epochs, job.architecture, "cifar10", args.data_dir, args.n_train, device)
        data = datasets.get("cifar10").obj(args.data_dir, CACHE / "data")
        cfg, specs = replace(job.eval, n_examples=args.n), job.attacks
    else:
        model, _, _ = trained_model(8, device=device)
        data = datasets.get("digits").obj()
        cfg = EvalConfig(n_examples=args.n)
    model = model.to(device)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    metrics = evaluate(model, data, cfg, specs, device, seed=0)
    prof.disable()
    total = time.perf_counter() - t0
    attack_s = {m.attack: m.value for m in metrics if m.metric == "attack_seconds"}
    print(f"evaluate(): {total:.1f} s on {args.device}, {args.n} examples")
    for name, s in attack_s.items():
        print(f"  {name:12s} {s:7.2f} s  {100 * s / total:5.1f} %")
    rest = total - sum(attack_s.values())
    print(f"  {'clean+sanity':12s} {rest:7.2f} s  {100 * rest / total:5.1f} %")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-4000:])


if __name__ == "__main__":
    main()
