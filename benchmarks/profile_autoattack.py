"""Where AutoAttack's time goes: seconds per component, the harness against pyautoattack, on the same images.

Each component call is timed with the device's queue drained before and after, so the figures are the work, not
its launch. Also prints both runs' robust accuracy and whether the harness calls any example robust that the
reference broke (it must not).

    PYTHONPATH=. python benchmarks/profile_autoattack.py --data-dir DIR --device cuda [--eps 2/255 8/255]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from pyautoattack import AutoAttack as Reference

import harness.attacks.autoattack as aa_module
from benchmarks.attacks import sync, trained_model
from harness.api.data import subset
from harness.api.plugins import attacks


def timed_calls(fn: Callable[..., Any], name: Callable[..., str], seconds: dict[str, float], device: torch.device) -> Callable[..., Any]:
    """`fn`, adding each call's drained wall time to seconds[name(*args)]."""

    def run(*args: Any, **kwargs: Any) -> Any:
        sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        seconds[name(*args, **kwargs)] += time.perf_counter() - t0
        return out

    return run


def main() -> None:
    """Print per-component seconds of both implementations at each eps."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="CIFAR-10 folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=200, help="test images (a seeded random subset)")
    ap.add_argument("--eps", nargs="+", default=["2/255", "8/255"])
    ap.add_argument("--epochs", type=int, default=2, help="training epochs (the gpu-check grid's: 2 on 10,000 images)")
    ap.add_argument("--n-train", type=int, default=10000)
    args = ap.parse_args()
    device = torch.device(args.device)
    model, x_all, y_all = trained_model(args.epochs, "resnet20", "cifar10", args.data_dir, args.n_train, device)
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = (t.to(device) for t in subset(x_all, y_all, args.n, seed=0))
    with torch.no_grad():
        print(f"clean accuracy on the {len(y)} images: {float((model(x).argmax(1) == y).float().mean()):.4f}")
    real = aa_module.run_component
    for eps in (float(Fraction(e)) for e in args.eps):
        ours_s: dict[str, float] = defaultdict(float)
        aa_module.run_component = timed_calls(real, lambda aa, name, *a, **k: name + ("" if k.get("early_stop", True) else " (re-run)"),
                                              ours_s, device)
        try:
            sync(device)
            t0 = time.perf_counter()
            adv, trace = attacks.get("autoattack").obj(version="standard", seed=0).perturb_traced(model, x, y, eps)
            sync(device)
            ours_total = time.perf_counter() - t0
        finally:
            aa_module.run_component = real
        with torch.no_grad():
            ours_robust = trace["square"] & (model(adv).argmax(1) == y)
        ref = Reference(model, norm="Linf", eps=eps, version="standard", seed=0, device=device)
        ref.logger.disabled = True
        ref_s: dict[str, float] = defaultdict(float)
        for part in (ref.apgd, ref.apgd_targeted, ref.fab, ref.square):
            label = type(part).__name__
            part.perturb = timed_calls(part.perturb, lambda *a, _p=part, _l=label, **k: _l + ("-T" if getattr(_p, "targeted", False) else ""),
                                       ref_s, device)
        sync(device)
        t0 = time.perf_counter()
        ref_adv, _ = ref.run_standard_evaluation(x, y, batch_size=len(y))
        sync(device)
        ref_total = time.perf_counter() - t0
        with torch.no_grad():
            ref_robust = model(ref_adv).argmax(1) == y
        weaker = int((ours_robust & ~ref_robust).sum())
        print(f"\neps {eps:.5g}: harness {ours_total:.1f} s, robust {int(ours_robust.sum())}; pyautoattack {ref_total:.1f} s, "
              f"robust {int(ref_robust.sum())}; robust here but broken by the reference: {weaker}")
        print("survivors after each component (harness): " + ", ".join(f"{k} {int(v.sum())}" for k, v in trace.items()))
        print("harness seconds:      " + ", ".join(f"{k} {v:.2f}" for k, v in ours_s.items()))
        print("pyautoattack seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in ref_s.items()))


if __name__ == "__main__":
    main()
