"""ResNet-20 training throughput on this machine, schedules compared on a short run, and AutoAttack's cost.

Throughput: images/s of the harness's training loop (batch 128, fp32, crop + flip, torch.get_num_threads() as
set), against a peer (a bare PyTorch loop, no augmentation) and against the hardware limit measured in the same
run (the machine's fp32 matmul rate divided by the FLOPs one training image costs, 3 x forward).
AutoAttack's cost per image that survives every component (the study's worst case) is timed at a tiny eps, where
no image is fooled, so all four components run their full budget.

    PYTHONPATH=. python benchmarks/training.py --data-dir /tmp/cifar --throughput
    PYTHONPATH=. python benchmarks/training.py --data-dir /tmp/cifar --schedules --n-train 10000 --epochs 4
    PYTHONPATH=. python benchmarks/training.py --data-dir /tmp/cifar --precisions --n-train 10000 --epochs 3
    PYTHONPATH=. python benchmarks/training.py --data-dir /tmp/cifar --autoattack 8
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.api.config import AttackSpec, TrainConfig
from harness.api.data import ImageData, to_float
from harness.api.nets import Normalized
from harness.api.plugins import architectures, datasets
from harness.evaluation.measure import count_macs
from harness.evaluation.runs import accuracy, run_attacks
from harness.training.train import train

CPU = torch.device("cpu")
BATCH = 128


def resnet20(data: ImageData) -> torch.nn.Module:
    """A seeded, freshly initialised ResNet-20 taking [0, 1] pixels."""
    torch.manual_seed(0)
    return Normalized(architectures.get("resnet20").obj(num_classes=10, in_channels=3), data.mean, data.std)


def matmul_gflops(seconds: float = 3.0) -> float:
    """Sustained fp32 GFLOP/s of a 1024^3 matmul on this machine now (the hardware limit, measured)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9


def bare_loop(model: torch.nn.Module, data: ImageData, n: int) -> tuple[float, float]:
    """Images per wall second and per CPU second of the plainest SGD loop on the same model: the peer."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = to_float(data.x_train[:n]), data.y_train[:n]
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n, BATCH):
        loss = F.cross_entropy(model(x[i : i + BATCH]), y[i : i + BATCH])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def throughput(data: ImageData, n: int) -> None:
    """Harness loop vs bare loop vs the matmul bound, images per wall second and per CPU second.

    On a shared machine the wall figures measure the load; CPU seconds (all threads summed) are what a quiet
    machine would spend, so a quiet machine's wall rate is about the CPU rate times the thread count.
    """
    macs = count_macs(resnet20(data).eval(), to_float(data.x_test[:1]))
    limit = matmul_gflops() * 1e9 / (3 * 2 * macs)  # forward + two backward products per image
    peer, peer_cpu = bare_loop(resnet20(data), data, n)
    t0, c0 = time.perf_counter(), time.process_time()
    train(resnet20(data), data, TrainConfig(epochs=1, batch_size=BATCH, n_train=n), seed=0, device=CPU, n_train=n)
    ours, ours_cpu = n / (time.perf_counter() - t0), n / (time.process_time() - c0)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; ResNet-20 {macs / 1e6:.1f} M MACs/image")
    print(f"harness train loop  {ours:8.1f} img/s wall  {ours_cpu:8.1f} img per CPU-s  (x{ours_cpu / peer_cpu:.2f} of the bare loop per CPU-s, {ours / limit:.1%} of the matmul bound)")
    print(f"bare PyTorch loop   {peer:8.1f} img/s wall  {peer_cpu:8.1f} img per CPU-s")
    print(f"matmul bound        {limit:8.1f} img/s wall (1024^3 fp32 matmul measured now)")


def schedules(data: ImageData, n_train: int, epochs: int) -> None:
    """Clean test accuracy (full test set) after `epochs` on `n_train` images, one row per schedule."""
    for label, extra in [("cosine", {}), ("warmup+cosine", {"warmup_epochs": 1}), ("onecycle", {"schedule": "onecycle"})]:
        model = resnet20(data)
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=0.1, n_train=n_train, **extra)
        t0 = time.perf_counter()
        train(model, data, cfg, seed=0, device=CPU, n_train=n_train)
        secs = time.perf_counter() - t0
        acc = float(accuracy(model, to_float(data.x_test), data.y_test, CPU).float().mean())
        print(f"{label:14s} {epochs} epochs x {n_train} images: test accuracy {acc:.4f}  ({secs:.0f} s wall, {epochs * n_train / secs:.0f} img/s)", flush=True)


def precisions(data: ImageData, n_train: int, epochs: int) -> None:
    """fp32 (NCHW) against bf16 autocast (NHWC) on the CPU: same recipe and seed, clean test accuracy and speed."""
    for precision in ("fp32", "bf16"):
        model = resnet20(data)
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=0.1, n_train=n_train, warmup_epochs=1, precision=precision)
        t0 = time.perf_counter()
        train(model, data, cfg, seed=0, device=CPU, n_train=n_train)
        secs = time.perf_counter() - t0
        acc = float(accuracy(model, to_float(data.x_test), data.y_test, CPU).float().mean())
        print(f"{precision}: {epochs} epochs x {n_train} images: test accuracy {acc:.4f}  ({secs:.0f} s wall, {epochs * n_train / secs:.0f} img/s)", flush=True)


def autoattack_cost(data: ImageData, n: int) -> None:
    """Seconds per image for standard AutoAttack when every image survives every component, in NCHW and NHWC."""
    model = resnet20(data)
    train(model, data, TrainConfig(epochs=1, batch_size=BATCH, n_train=2000), seed=0, device=CPU, n_train=2000)
    x, y = to_float(data.x_test[:200]), data.y_test[:200]
    keep = accuracy(model, x, y, CPU)
    x, y = x[keep][:n], y[keep][:n]
    spec = AttackSpec("autoattack", (0.05 / 255,))
    masks = {}
    for layout in (torch.contiguous_format, torch.channels_last):  # [eval] channels_last: same model, other layout
        model.to(memory_format=layout)
        t0, c0 = time.perf_counter(), time.process_time()
        ev = run_attacks(model.eval(), x, y, (spec,), CPU, 250, seed=0)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        masks[layout] = ev.robust[("autoattack", 0.05 / 255)]
        robust = float(masks[layout].float().mean())
        print(f"AutoAttack (standard, Linf, {layout}) on {len(y)} images, {robust:.0%} survive: {secs:.0f} s wall, {cpu:.0f} CPU-s, {cpu / len(y):.1f} CPU-s per image", flush=True)
    model.to(memory_format=torch.contiguous_format)
    print(f"NCHW and NHWC agree on {int((masks[torch.contiguous_format] == masks[torch.channels_last]).sum())} of {len(y)} images")


def main() -> None:
    """Parse arguments and run the chosen measurements."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--schedules", action="store_true")
    ap.add_argument("--precisions", action="store_true", help="fp32 against bf16 training (accuracy and speed)")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--images", type=int, default=20 * BATCH, help="images per throughput measurement")
    ap.add_argument("--autoattack", type=int, default=0, metavar="N", help="time AutoAttack on N images")
    args = ap.parse_args()
    data = datasets.get("cifar10").obj(args.data_dir, Path("/tmp/harness-bench/data"))
    if args.throughput:
        throughput(data, args.images)
    if args.schedules:
        schedules(data, args.n_train, args.epochs)
    if args.precisions:
        precisions(data, args.n_train, args.epochs)
    if args.autoattack:
        autoattack_cost(data, args.autoattack)


if __name__ == "__main__":
    main()
