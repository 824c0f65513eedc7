"""Scheduler overhead per job (no-op plugins) and the smoke grid's wall time with 1 vs 2 workers, in one run.

    python benchmarks/scheduler.py [--jobs 40] [--skip-smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness.api.plugin_files import load_plugin_file
from harness.scheduling.runner import RunOptions, run

HERE = Path(__file__).resolve().parent
NOOP = HERE / "noop_plugins.py"

NOOP_GRID = """
name = "noop"
datasets = ["noop_data"]
architectures = ["noop_net"]
pruners = ["none"]
seeds = {seeds}
[train]
epochs = 0
[eval]
n_examples = 8
batch_size = 8
measure_latency = false
sanity_examples = 0
[[attacks]]
name = "noop_attack"
eps = [0.1]
"""


def timed(opts: RunOptions) -> tuple[float, int]:
    """Wall seconds of a run and the jobs it ran."""
    t0 = time.perf_counter()
    summary = run(opts)
    return time.perf_counter() - t0, summary.done


def main() -> None:
    """Print overhead per job and the 1-vs-2-worker ratio."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--skip-smoke", action="store_true")
    args = ap.parse_args()
    load_plugin_file(NOOP)  # the driver validates the grid, so it needs the names too
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for n in (1, args.jobs):
            grid = root / f"noop{n}.toml"
            grid.write_text(NOOP_GRID.format(seeds=list(range(n))))
            secs, done = timed(RunOptions(grid=str(grid), db=root / f"noop{n}.db", cache_dir=root / f"c{n}", site_dir=None, device="cpu", workers=1, plugin_files=[NOOP]))
            rows.append((n, secs, done))
        (n1, s1, _), (nn, sn, dn) = rows
        per_job = (sn - s1) / (nn - n1)
        print(f"no-op grid: 1 job {s1:.2f} s (worker start + DB + one job), {nn} jobs {sn:.2f} s ({dn} done)")
        print(f"scheduler overhead per job (marginal, 2 tasks each: dense + eval): {1000 * per_job:.1f} ms")
        if not args.skip_smoke:
            times = {}
            for w in (1, 2):
                times[w], _ = timed(RunOptions(grid="smoke", db=root / f"smoke{w}.db", cache_dir=root / f"s{w}", site_dir=None, device="cpu", workers=w))
                print(f"smoke grid, {w} worker(s): {times[w]:.1f} s")
            print(f"speed-up 2 workers vs 1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
