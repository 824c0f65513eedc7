"""What one more JPEG pass costs ResNet-20 on the CIFAR-10 JPEG copy: a lower bound on what the copy's own pass cost.

The shared CIFAR-10 copy is JPEG at quality 75 with 4:2:0 chroma subsampling (read from its quantisation tables).
The original pixels are not available offline, so the accuracy this copy loses against published CIFAR-10 figures
cannot be measured directly. This script measures a proxy: it passes every image through JPEG once more, at the
same quality and subsampling but with the 8x8 block grid shifted (so the pass quantises new coefficients instead
of re-finding the old ones), then

- evaluates a trained model (`--checkpoint`) on the re-encoded test set (a test-time shift only), and
- trains the study's recipe (`--grid`'s [train], `--epochs` overrides) from scratch on the re-encoded training set
  and evaluates it on the re-encoded test set, beside the same model's accuracy on the copy as it is.

A second pass on already-quantised images loses less than the first did, so the train-and-test drop is a lower
bound on the copy's own cost.

    PYTHONPATH=. python benchmarks/jpeg_penalty.py --data-dir /tmp/cifar10 --checkpoint checkpoints/resnet20-cifar10/seed0.pt
    PYTHONPATH=. python benchmarks/jpeg_penalty.py --data-dir /tmp/cifar10 --train --epochs 40 --seed 0
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.api.plugins import datasets
from harness.engine.checkpoints import fit
from harness.engine.grid import load_grid
from harness.engine.pipeline import build_model
from harness.evaluation.runs import accuracy
from harness.training.train import train

CPU = torch.device("cpu")


def reencode(x: torch.Tensor, quality: int, shift: int) -> torch.Tensor:
    """Every uint8 image (N, 3, H, W) through JPEG once more, its block grid moved by `shift` pixels (edge padding)."""
    out = torch.empty_like(x)
    arr = x.permute(0, 2, 3, 1).numpy()
    h, w = arr.shape[1:3]
    for i, img in enumerate(arr):
        padded = np.pad(img, ((shift, 0), (shift, 0), (0, 0)), mode="edge")
        buf = io.BytesIO()
        Image.fromarray(padded).save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out[i] = torch.from_numpy(back[shift : shift + h, shift : shift + w].copy()).permute(2, 0, 1)
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 image stacks."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * np.log10(255**2 / mse)


def test_acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Clean accuracy in % over the given test images."""
    return 100 * accuracy(model, x, y, CPU).float().mean().item()


def main() -> None:
    """Re-encode the data, then evaluate and/or train as asked."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--shift", type=int, default=4, help="block-grid offset of the extra pass, in pixels")
    ap.add_argument("--checkpoint", type=Path, help="a trained ResNet-20 state dict to evaluate on both test sets")
    ap.add_argument("--train", action="store_true", help="train the recipe on the re-encoded data and on the copy")
    ap.add_argument("--grid", default="study", help="grid whose [train] recipe to use")
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", action="store_true", help="with --train, also train on the copy as it is (same seed)")
    args = ap.parse_args()
    data = datasets.get("cifar10").obj(args.data_dir, Path("/tmp/harness-bench/data"))
    t0 = time.perf_counter()
    x_test2 = reencode(data.x_test, args.quality, args.shift)
    print(f"test set re-encoded (q{args.quality}, 4:2:0, shift {args.shift}): PSNR {psnr(data.x_test, x_test2):.1f} dB against the copy, {time.perf_counter() - t0:.0f} s", flush=True)
    job = replace(load_grid(args.grid).jobs[0], seed=args.seed)  # the grid's architecture and [train] recipe
    if args.checkpoint:
        model = build_model(job, data, CPU)
        fit(model, torch.load(args.checkpoint, map_location="cpu", weights_only=True), str(args.checkpoint), job.architecture)
        print(f"{args.checkpoint.name}: {test_acc(model, data.x_test, data.y_test):.2f} % on the copy's test set, {test_acc(model, x_test2, data.y_test):.2f} % on it re-encoded", flush=True)
    if args.train:
        cfg = job.train if args.epochs is None else replace(job.train, epochs=args.epochs)
        runs = [("re-encoded", replace(data, x_train=reencode(data.x_train, args.quality, args.shift), x_test=x_test2))]
        if args.baseline:
            runs.insert(0, ("copy", data))
        for name, d in runs:
            model = build_model(job, d, CPU)  # seeded: the same initial weights for every run, as the harness's own
            res = train(model, d, cfg, seed=args.seed, device=CPU)
            print(f"trained on the {name} data ({cfg.epochs} epochs, {cfg.precision}, seed {args.seed}): {test_acc(model, d.x_test, d.y_test):.2f} % on its test set, last loss {res.loss:.3f}, {res.seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
