"""Every registered pruner at two sparsities through the real pipeline: clean accuracy and measured cost ratios.

    python benchmarks/pruners.py --preset smoke                              # digits, small_cnn + resnet20
    python benchmarks/pruners.py --preset cifar10 --data-dir /tmp/cifar10    # CIFAR-10 subset, resnet20

Each job trains the dense model once (cached in a temporary directory), prunes, fine-tunes, and measures
params, MACs, nonzero weights and latency (median, batch 1 and 128) on the real modules, as `harness run`
does. Prints a Markdown table; a pruner that cannot prune an architecture shows the reason instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from harness.api.errors import HarnessError
from harness.api.plugins import datasets, pruners
from harness.engine.artifacts import ArtifactCache
from harness.engine.grid import parse_grid
from harness.engine.pipeline import execute

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "datasets": ["digits"],
        "architectures": ["small_cnn", "resnet20"],
        "train": {"epochs": 15, "batch_size": 64, "lr": 0.05},
        "finetune": {"epochs": 3, "batch_size": 64, "lr": 0.01},
        "eval": {"n_examples": 360, "batch_size": 360},
    },
    "cifar10": {
        "datasets": ["cifar10"],
        "architectures": ["resnet20"],
        "train": {"epochs": 6, "batch_size": 128, "lr": 0.1, "n_train": 2000},
        "finetune": {"epochs": 1, "batch_size": 128, "lr": 0.01},
        "eval": {"n_examples": 500, "batch_size": 500},
    },
}
COLUMNS = ("clean_acc", "params_ratio", "macs_ratio", "nonzero_params_ratio", "latency_ms_b1_ratio", "latency_ms_b128_ratio")


def grid_table(preset: str, sparsities: list[float], names: list[str]) -> dict[str, Any]:
    """The grid for a preset: every named pruner, the given sparsities, one cheap attack (the grid needs one)."""
    raw = dict(PRESETS[preset])
    raw.update(name=f"pruners-{preset}", pruners=names, sparsities=sparsities, seeds=[0])
    raw["attacks"] = [{"name": "fgsm", "eps": [8 / 255 if preset == "cifar10" else 0.1]}]
    # The table is about accuracy and cost: skip the sanity checks' extra attack runs.
    raw["eval"] = {**raw["eval"], "sanity_examples": 0}
    return raw


def main(argv: list[str] | None = None) -> int:
    """Run the table's jobs in this process and print it."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.6])
    ap.add_argument("--pruners", nargs="+", default=None, help="default: every registered pruner")
    ap.add_argument("--architectures", nargs="+", default=None, help="default: the preset's")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="dense/pruned checkpoints (default: a temporary dir)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.pruners or pruners.names()
    raw = grid_table(args.preset, args.sparsities, names)
    if args.architectures:
        raw["architectures"] = args.architectures
    grid = parse_grid(raw, path=f"<{args.preset} preset>")
    device = torch.device("cpu")
    cache_root = args.cache_dir or Path(tempfile.mkdtemp(prefix="harness-pruners-"))
    cache = ArtifactCache(cache_root)
    loaded: dict[str, Any] = {}
    rows: list[tuple[str, str, str, float, dict[str, float] | str, float]] = []
    for job in grid.jobs:
        if job.dataset not in loaded:
            fn = datasets.get(job.dataset).obj
            loaded[job.dataset] = fn(data_dir=args.data_dir) if args.data_dir else fn()
        t0 = time.perf_counter()
        try:
            metrics, _ = execute(job, loaded[job.dataset], cache, device)
            values: dict[str, float] | str = {m.metric: m.value for m in metrics if not m.attack}
        except HarnessError as exc:
            values = str(exc).split(";")[0]
        rows.append((job.architecture, job.pruner.label, pruners.get(job.pruner.name).obj.family, job.sparsity, values, time.perf_counter() - t0))
        brief = values if isinstance(values, str) else {c: round(values.get(c, float("nan")), 3) for c in ("sparsity_achieved", *COLUMNS)}
        print(f"done {job.architecture} {job.pruner.label} {job.sparsity} in {rows[-1][-1]:.1f}s: {brief}", file=sys.stderr, flush=True)
    print(f"Dataset preset `{args.preset}` ({', '.join(grid.raw['datasets'])}); ratios are pruned / dense, measured.\n")
    print("| architecture | pruner | family | requested | achieved | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(COLUMNS))
    for arch, name, family, s, values, _ in rows:
        if isinstance(values, str):
            print(f"| {arch} | {name} | {family} | {s:.2f} | fails: {values} |" + " |" * len(COLUMNS))
            continue
        cells = " | ".join(f"{values.get(c, float('nan')):.3f}" for c in COLUMNS)
        print(f"| {arch} | {name} | {family} | {s:.2f} | {values.get('sparsity_achieved', 0.0):.3f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
