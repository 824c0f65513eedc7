"""Runs a grid: validate everything first, then schedule the jobs not yet done; only this process writes the DB."""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.api.config import JobSpec, for_device
from harness.api.errors import HarnessError
from harness.api.files import check_writable
from harness.api.plugins import datasets
from harness.engine.checkpoints import check_fits
from harness.engine.grid import Grid, load_grid
from harness.engine.provenance import environment
from harness.scheduling.dag import STAGES, build_dag
from harness.scheduling.executors import (
    Executor,
    InlineExecutor,
    LocalExecutor,
    cpu_threads,
)
from harness.scheduling.isolation import write_launcher
from harness.scheduling.scheduler import Policy, Scheduler
from harness.scheduling.signals import signame
from harness.scheduling.stubs import register_stubs, unregister_stubs
from harness.scheduling.worker import WorkerConfig
from harness.store.schema import check_run_target, probe
from harness.store.session import Store, owner_id

ProgressFn = Callable[[str, JobSpec, int, int], None]  # (event, job, finished, total)


@dataclass
class RunOptions:
    """What `harness run` was asked to do."""

    grid: str = "smoke"
    db: Path = Path("results.db")
    site_dir: Path | None = Path("site")
    device: str = "auto"
    devices: list[int] | None = None
    workers: int = 1
    executor: str = "local"  # local | ray
    address: str | None = None
    data_dir: Path | None = None
    cache_dir: Path | None = None
    fresh: bool = False
    timeout_s: float | None = None
    retries: int = 1
    # Plugin files imported in worker processes only (submissions), with stubs describing them to the driver.
    plugin_files: list[Path] = field(default_factory=list)
    pruner_stubs: dict[str, dict[str, str]] = field(default_factory=dict)
    # With plugin files: sandbox their workers (read-only file system but their folder and the cache, no network).
    sandbox: bool = False
    # Validate everything a run validates and say what it would compute; run nothing, write nothing.
    dry_run: bool = False

    @property
    def cache_root(self) -> Path:
        """Artifacts and decoded datasets live beside the DB unless told otherwise."""
        return (self.cache_dir or Path(self.db).resolve().parent / ".harness").resolve()


@dataclass
class RunSummary:
    """What a run did."""

    grid: str
    total: int
    cached: int = 0
    done: int = 0
    by_others: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what validation changed, e.g. duplicate grid entries collapsed
    # Tasks by stage (dense, pruned, eval) that a dry run found still to compute.
    planned: dict[str, int] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; a cuda request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise HarnessError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto.")
    return torch.device(name)


def driver_environment(device: torch.device) -> dict[str, object]:
    """The run's environment as the driver sees it, without creating a CUDA context just to name the GPU.

    Each job's provenance carries its worker's own environment, with the name of the GPU it ran on.
    """
    env = environment(torch.device("cpu"))
    return env | {"device": str(device), "device_name": env["device_name"] if device.type == "cpu" else None,
                  "cuda": torch.version.cuda if device.type == "cuda" else None}


def worker_configs(opts: RunOptions, device: torch.device, private: Path | None = None) -> list[WorkerConfig]:
    """--workers workers per GPU (all visible, or --devices), else --workers CPU workers sharing the cores.

    With plugin files and a `private` folder, each worker gets an empty folder of its own under it to start in,
    and with opts.sandbox a launcher that leaves it only that folder and the cache writable.
    """
    def cfg(dev: str, threads: int, i: int) -> WorkerConfig:
        c = WorkerConfig(dev, threads, opts.cache_root, opts.data_dir, list(opts.plugin_files), opts.fresh, [Path(opts.db).resolve()])
        if private is not None and opts.plugin_files:
            c.workdir = private / f"worker{i}"
            c.workdir.mkdir()
            if opts.sandbox:
                opts.cache_root.mkdir(parents=True, exist_ok=True)
                c.launcher = write_launcher(private / f"launcher{i}", c.workdir, [opts.cache_root])
        return c

    if device.type == "cuda":
        ids = opts.devices if opts.devices is not None else ([device.index] if device.index is not None else list(range(torch.cuda.device_count())))
        bad = [i for i in ids if not 0 <= i < torch.cuda.device_count()]
        if bad:
            raise HarnessError(f"--devices {bad} not visible; this machine has {torch.cuda.device_count()} CUDA device(s).")
        # Small models leave a card mostly idle (one ResNet-20 job is launch-bound), so several workers may share
        # one; each pins its card. The CPU still feeds them all: split its cores between the workers.
        slots = [i for i in ids for _ in range(max(1, opts.workers))]
        return [cfg(f"cuda:{i}", cpu_threads(len(slots)), n) for n, i in enumerate(slots)]
    n = max(1, opts.workers)
    return [cfg("cpu", cpu_threads(n), i) for i in range(n)]


def make_executor(opts: RunOptions, configs: list[WorkerConfig]) -> Executor:
    """The executor named by the options."""
    if opts.executor == "ray":
        from harness.scheduling.ray import RayExecutor

        return RayExecutor(configs, address=opts.address)
    if opts.executor != "local":
        raise HarnessError(f"Unknown executor {opts.executor!r}; use local or ray.")
    if opts.workers == 0:
        return InlineExecutor(configs[0])
    return LocalExecutor(configs)


def check_datasets(grid: Grid, jobs: list[JobSpec], opts: RunOptions) -> None:
    """Load each dataset the pending jobs need and fit their checkpoints, so a missing or misfit one fails before the DB is touched."""
    for name in dict.fromkeys(j.dataset for j in jobs):
        data = datasets.get(name).obj(data_dir=opts.data_dir, cache_dir=opts.cache_root)
        check_fits([j for j in jobs if j.dataset == name], data)


def job_fields(job: JobSpec) -> dict[str, object]:
    """Columns of a new job row."""
    return {
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


def check_options(opts: RunOptions) -> None:
    """Refuse option values no run can use, and a --db, --site-dir or --cache-dir that cannot be written, before anything runs."""
    if opts.executor not in ("local", "ray"):
        raise HarnessError(f"Unknown executor {opts.executor!r}; use local or ray.")
    if opts.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise HarnessError("--executor ray needs Ray: pip install 'harness[ray]' (or pip install ray).")
    if opts.workers < 0:
        raise HarnessError(f"--workers {opts.workers}: pass 1 or more worker processes, or 0 to run tasks in this process.")
    if opts.retries < 0:
        raise HarnessError(f"--retries {opts.retries}: pass 0 or more retries.")
    if opts.timeout_s is not None and not opts.timeout_s > 0:
        raise HarnessError(f"--timeout {opts.timeout_s:g}: pass a time limit in seconds > 0, or leave it out.")
    check_writable(opts.db, "--db", folder=False)
    if opts.site_dir is not None:
        check_writable(opts.site_dir, "--site-dir")
    check_writable(opts.cache_root, "--cache-dir")


def run(opts: RunOptions, progress: ProgressFn | None = None) -> RunSummary:
    """Run a grid to completion; failed jobs are recorded and do not stop the others."""
    t0 = time.perf_counter()
    if Path(opts.db).exists():
        check_run_target(opts.db)  # refused before the grid is even read, and the file left as it was
    check_options(opts)
    stubs = register_stubs(opts.pruner_stubs)
    try:
        grid = load_grid(opts.grid)
        device = resolve_device(opts.device)
        # "auto" precisions become concrete before any key is taken: a bf16 model never shares a key with an fp32 one.
        grid.jobs = [for_device(j, device.type) for j in grid.jobs]
        with tempfile.TemporaryDirectory(prefix="harness-run-") as private:
            return _run(opts, grid, device, worker_configs(opts, device, Path(private)), progress, t0)
    finally:
        # A stand-in left registered would pass, in a later run in this process, for a pruner shipped with the harness.
        unregister_stubs(stubs)


def _done_keys(db: Path, keys: list[str]) -> set[str]:
    """Which of `keys` the database holds as done, read-only: a run that fails validation leaves the file unchanged."""
    if probe(db, allow_blank=True) == 0:  # another `harness run` is creating this file right now: nothing is done yet
        return set()
    reader = Store(db, readonly=True)
    try:
        return reader.done_keys(keys)
    finally:
        reader.close()


def _run(opts: RunOptions, grid: Grid, device: torch.device, configs: list[WorkerConfig], progress: ProgressFn | None, t0: float) -> RunSummary:
    """The body of `run` once the grid is valid and the workers are configured."""
    summary = RunSummary(grid.name, len(grid.jobs), notes=list(grid.notes))
    done_before: set[str] = set()
    if Path(opts.db).exists() and not opts.fresh:
        done_before = _done_keys(Path(opts.db), [j.key for j in grid.jobs])
    todo = [j for j in grid.jobs if j.key not in done_before]
    summary.cached = len(grid.jobs) - len(todo)
    check_datasets(grid, todo, opts)
    if opts.dry_run:
        tasks = build_dag(todo, opts.cache_root / "artifacts", fresh=opts.fresh) if todo else {}
        summary.planned = {stage: sum(t.stage == stage for t in tasks.values()) for stage in STAGES}
        summary.seconds = time.perf_counter() - t0
        return summary
    if todo:
        tasks = build_dag(todo, opts.cache_root / "artifacts", fresh=opts.fresh)
        executor = make_executor(opts, configs)
        store = Store(opts.db)
        store.reset_stale()
        env = driver_environment(device)
        run_id = store.start_run(grid.name, grid.path, len(grid.jobs), env, n_todo=len(todo))
        store.add_jobs(run_id, [(j.key, job_fields(j)) for j in todo])
        if opts.fresh:  # a done job is never claimed again; --fresh asks for exactly that
            store.requeue(j.key for j in todo)
        owner = owner_id(run_id)
        sched = Scheduler(tasks, store, run_id, owner, executor, Policy(opts.timeout_s, opts.retries), progress)
        try:
            executor.start()
            # Provenance of the environment is the driver's; workers add what they ran.
            tally = sched.run()
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: the scheduler marked running jobs interrupted
            store.finish_run(run_id, sched.tally.done, len(sched.tally.failed), summary.cached, ended=f"interrupted ({signame(exc)})")
            store.close()
            raise
        finally:
            executor.shutdown()
        summary.done, summary.failed, summary.by_others = tally.done, tally.failed, tally.by_others
        store.finish_run(run_id, summary.done, len(summary.failed), summary.cached)
        store.close()
    if opts.site_dir is not None and Path(opts.db).exists():
        from harness.site.build import build_site

        reader = Store(opts.db, readonly=True)
        build_site(reader, opts.site_dir)
        reader.close()
    summary.seconds = time.perf_counter() - t0
    return summary
