"""Runs a grid: validate everything first, then execute the jobs not yet done, recording each atomically."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.artifacts import ArtifactCache
from harness.data import ImageData
from harness.errors import HarnessError
from harness.grid import Grid, JobSpec, load_grid
from harness.pipeline import execute
from harness.plugins import datasets
from harness.provenance import environment
from harness.store.session import Store

ProgressFn = Callable[[str, JobSpec, int, int], None]  # (event, job, index, total)


@dataclass
class RunOptions:
    """What `harness run` was asked to do."""

    grid: str = "smoke"
    db: Path = Path("results.db")
    site_dir: Path | None = Path("site")
    device: str = "auto"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    fresh: bool = False

    @property
    def cache_root(self) -> Path:
        """Artifacts and decoded datasets live beside the DB unless told otherwise."""
        return self.cache_dir or (Path(self.db).resolve().parent / ".harness")


@dataclass
class RunSummary:
    """What a run did."""

    grid: str
    total: int
    cached: int = 0
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; a cuda request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto.")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise HarnessError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.")
    return torch.device(name)


def load_datasets(grid: Grid, jobs: list[JobSpec], opts: RunOptions) -> dict[str, ImageData]:
    """Load the datasets that pending jobs need (errors surface before the DB is touched)."""
    needed = list(dict.fromkeys(j.dataset for j in jobs))
    return {name: datasets.get(name).obj(data_dir=opts.data_dir, cache_dir=opts.cache_root) for name in needed}


def run(opts: RunOptions, progress: ProgressFn | None = None) -> RunSummary:
    """Run a grid to completion; failed jobs are recorded and do not stop the others."""
    t0 = time.perf_counter()
    grid = load_grid(opts.grid)
    device = resolve_device(opts.device)
    summary = RunSummary(grid.name, len(grid.jobs))
    done_before: set[str] = set()
    if Path(opts.db).exists() and not opts.fresh:
        # Read-only: a run that fails validation below must leave the file byte-for-byte unchanged.
        reader = Store(opts.db, readonly=True)
        done_before = reader.done_keys(j.key for j in grid.jobs)
        reader.close()
    todo = [j for j in grid.jobs if j.key not in done_before]
    summary.cached = len(grid.jobs) - len(todo)
    data = load_datasets(grid, todo, opts)
    if todo:
        store = Store(opts.db)
        store.reset_stale()
        cache = ArtifactCache(opts.cache_root / "artifacts")
        run_id = store.start_run(grid.name, grid.path, len(grid.jobs), environment(device))
        env = environment(device)
        for i, job in enumerate(todo):
            if progress:
                progress("start", job, i, len(todo))
            fields = {
                "dataset": job.dataset,
                "architecture": job.architecture,
                "pruner": job.pruner.name,
                "pruner_label": job.pruner.label,
                "sparsity": job.sparsity,
                "seed": job.seed,
                "dense_key": job.dense_key,
                "pruned_key": job.pruned_key,
                "params": job.params(),
            }
            store.claim(job.key, run_id, fields)
            t = time.perf_counter()
            try:
                metrics, prov = execute(job, data[job.dataset], cache, device, fresh=opts.fresh)
            except KeyboardInterrupt as exc:
                store.fail(job.key, exc)
                raise
            except Exception as exc:  # one bad job must not stop the grid; its traceback is stored
                store.fail(job.key, exc)
                summary.failed.append((job.key, f"{type(exc).__name__}: {exc}".splitlines()[0]))
                if progress:
                    progress("failed", job, i, len(todo))
                continue
            store.complete(job.key, metrics, prov | {"environment": env}, time.perf_counter() - t)
            summary.done += 1
            if progress:
                progress("done", job, i, len(todo))
        store.finish_run(run_id, summary.done, len(summary.failed), summary.cached)
        store.close()
    if opts.site_dir is not None and Path(opts.db).exists():
        from harness.site import build_site

        reader = Store(opts.db, readonly=True)
        build_site(reader, opts.site_dir)
        reader.close()
    summary.seconds = time.perf_counter() - t0
    return summary
