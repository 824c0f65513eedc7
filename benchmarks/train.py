"""Training throughput (images/s): the harness's `train()` against a minimal reference loop, and the hardware.

Both sides train the same architecture from the same initialisation on the same CIFAR-shaped uint8 data
(random pixels: throughput does not depend on them), at the same batch size, precision, memory layout and
device, with random crop + flip and SGD with a cosine schedule. The reference loop is the shortest loop that
does this work with the data already on the device; `train()` pays for its own transfer of the data. Each
side is warmed up, then timed `--repeats` times alternately; the median is reported. The hardware limit is
a dense matmul's FLOP/s measured in the same run at the same precision, against the model's training
FLOPs (3 x 2 x MACs per image).

    PYTHONPATH=. python benchmarks/train.py --device cpu --n 256 --repeats 3
    PYTHONPATH=. python benchmarks/train.py --device cuda --n 20000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.config import TrainConfig, resolve_precision
from harness.api.data import ImageData
from harness.api.nets import Normalized
from harness.api.plugins import architectures
from harness.evaluation.measure import count_macs
from harness.training.train import autocast, cudnn_autotune, train, uses_channels_last

ARCHS = ["resnet20", "resnet56", "vgg16_bn", "mobilenetv2"]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def fake_cifar(n: int) -> ImageData:
    """n CIFAR-shaped uint8 images with labels, augmentation on (as the CIFAR-10 plugin)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageData("fake_cifar", x, y, x[:1], y[:1], [str(i) for i in range(10)], MEAN, STD, augment=True)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(arch: str, device: torch.device) -> nn.Module:
    """The architecture, seeded, wrapped in input normalisation as the harness trains it."""
    torch.manual_seed(0)
    return Normalized(architectures.get(arch).obj(num_classes=10, in_channels=3), MEAN, STD).to(device)


def reference_loop(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, device: torch.device, precision: str) -> float:
    """A minimal training loop over data already on the device; returns its wall time in seconds."""
    layout = torch.channels_last if uses_channels_last(model, device, precision) else torch.contiguous_format
    if device.type == "cuda":  # the cuDNN settings train() uses
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, cudnn_autotune()
    model.to(memory_format=layout).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n, bs = len(y), cfg.batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * ((n + bs - 1) // bs))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, device=device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            xb, yb = x[idx], y[idx]
            m = len(idx)
            # Random crop of the 4-padded image and random flip, as one gather.
            dx, dy = torch.randint(0, 9, (2, m, 1), device=device)
            cols = torch.arange(32, device=device).expand(m, 32)
            cols = torch.where(torch.rand(m, 1, device=device) < 0.5, cols.flip(1), cols) + dx
            rows = torch.arange(32, device=device) + dy
            xb = F.pad(xb, (4, 4, 4, 4))[torch.arange(m, device=device)[:, None, None, None], torch.arange(3, device=device)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
            xb = (xb.float() / 255).contiguous(memory_format=layout)
            with autocast(device, precision):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    sync(device)
    return time.perf_counter() - t0


def matmul_peak(device: torch.device, precision: str, size: int) -> float:
    """Measured FLOP/s of a square matmul at the training precision: this run's hardware limit."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < 0.5:
        a @ b
        reps += 1
        if reps % 10 == 0:
            sync(device)
    sync(device)
    return 2 * size**3 * reps / (time.perf_counter() - t0)


def median_time(fn: Callable[[], float], repeats: int) -> float:
    """Median of `repeats` timed calls."""
    return statistics.median(fn() for _ in range(repeats))


def bench(arch: str, data: ImageData, cfg: TrainConfig, device: torch.device, repeats: int, compile_mode: str | None = None) -> dict[str, float | str]:
    """Throughput of train() and of the reference loop for one architecture, timed alternately; with `compile_mode`,
    also of the reference loop on a torch.compile'd model (does compiling pay off at this batch size?)."""
    precision = resolve_precision(cfg.precision, device.type)
    n = len(data.y_train)
    xd, yd = data.x_train.to(device), data.y_train.to(device)
    warm = TrainConfig(epochs=1, batch_size=cfg.batch_size, lr=cfg.lr, precision=cfg.precision)
    warm_n = min(n, 3 * cfg.batch_size)
    train(fresh_model(arch, device), data, warm, seed=0, device=device, n_train=warm_n)
    reference_loop(fresh_model(arch, device), xd[:warm_n], yd[:warm_n], warm, device, precision)
    compiled = None
    if compile_mode:
        # One compiled model for every repeat (a fresh one would recompile), warmed up on full batches and on the
        # epoch's short last batch, so no compilation falls inside the timing.
        compiled = torch.compile(fresh_model(arch, device), mode=compile_mode)
        tail = n % cfg.batch_size
        reference_loop(compiled, xd[: warm_n + tail], yd[: warm_n + tail], warm, device, precision)
    ours, ref, comp = [], [], []
    for _ in range(repeats):
        ours.append(train(fresh_model(arch, device), data, cfg, seed=0, device=device).seconds)
        ref.append(reference_loop(fresh_model(arch, device), xd, yd, cfg, device, precision))
        if compiled is not None:
            comp.append(reference_loop(compiled, xd, yd, cfg, device, precision))
    images = cfg.epochs * n
    t_ours, t_ref = statistics.median(ours), statistics.median(ref)
    macs = count_macs(fresh_model(arch, device).eval(), data.x_train[:1].float().to(device) / 255)
    return {
        "arch": arch,
        "precision": precision,
        "channels_last": str(uses_channels_last(fresh_model(arch, device), device, precision)),
        "harness_img_s": images / t_ours,
        "reference_img_s": images / t_ref,
        "time_ratio": t_ours / t_ref,  # harness time / reference time: <= 1.1 is the bar on the CPU
        "train_flop_per_img": 6.0 * macs,
        "compiled_reference_img_s": images / statistics.median(comp) if comp else float("nan"),
    }


def main() -> None:
    """Time train() against the reference loop for each architecture asked for."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--arch", nargs="+", default=ARCHS, help="registered architectures (harness list architectures)")
    ap.add_argument("--n", type=int, default=None, help="training images per epoch (default 20000 on CUDA, 256 on the CPU)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128, help="the paper grids' batch size")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 on CUDA, fp32 on the CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune (HARNESS_CUDNN_BENCHMARK=1), both loops")
    ap.add_argument("--compile", default=None, metavar="MODE",
                    help="also time the reference loop on torch.compile(model, mode=MODE), e.g. reduce-overhead (CUDA graphs) or default")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.cudnn_benchmark:
        os.environ["HARNESS_CUDNN_BENCHMARK"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.n or (20000 if device.type == "cuda" else 256)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05, precision=args.precision)
    data = fake_cifar(n)
    precision = resolve_precision(args.precision, device.type)
    peak = matmul_peak(device, precision, 8192 if device.type == "cuda" else 1024)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {device} ({name}); {n} CIFAR-shaped images x {args.epochs} epoch(s), batch {args.batch_size}, "
          f"{precision}, cuDNN autotuning {'on' if cudnn_autotune() else 'off'}; measured {precision} matmul peak {peak / 1e12:.2f} TFLOP/s; median of {args.repeats}")
    extra = f" compiled reference ({args.compile}) img/s |" if args.compile else ""
    print("| architecture | precision | NHWC | train() img/s | reference img/s | time train()/reference | train() % of matmul peak |" + extra)
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if args.compile else ""))
    rows = []
    for arch in args.arch:
        r = bench(arch, data, cfg, device, args.repeats, args.compile)
        r["peak_fraction"] = float(r["harness_img_s"]) * float(r["train_flop_per_img"]) / peak
        rows.append(r)
        print(f"| {arch} | {r['precision']} | {r['channels_last']} | {r['harness_img_s']:,.0f} | {r['reference_img_s']:,.0f} "
              f"| {r['time_ratio']:.3f} | {100 * r['peak_fraction']:.1f} % |" + (f" {r['compiled_reference_img_s']:,.0f} |" if args.compile else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "device_name": name, "matmul_peak_flops": peak, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
