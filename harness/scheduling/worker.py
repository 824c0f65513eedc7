"""Worker side of the scheduler: runs one task at a time and sends back metrics or the error."""

from __future__ import annotations

import ctypes
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.api.data import ImageData
from harness.api.metrics import Metric
from harness.engine.artifacts import ArtifactCache
from harness.engine.provenance import environment
from harness.scheduling.dag import Task

# Failures worth retrying: the same task may well succeed on another attempt.
TRANSIENT = (MemoryError, OSError, EOFError, ConnectionError)


@dataclass
class WorkerConfig:
    """What a worker needs to set itself up."""

    device: str
    threads: int
    cache_root: Path
    data_dir: Path | None
    plugin_files: list[Path] = field(default_factory=list)
    fresh: bool = False
    # Files that plugin code must never open (the results DB): refused by an audit hook in the worker.
    guarded: list[Path] = field(default_factory=list)
    # Workers that run submitted code start in an empty private folder, through a sandboxing launcher if set.
    workdir: Path | None = None
    launcher: Path | None = None


@dataclass
class Outcome:
    """A task's result as sent to the driver."""

    task_id: str
    ok: bool
    metrics: list[Metric] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    transient: bool = False
    seconds: float = 0.0


class TaskRunner:
    """Executes tasks with per-process caches of datasets (the part a worker keeps between tasks)."""

    def __init__(self, cfg: WorkerConfig) -> None:
        from harness.api.plugin_files import load_plugin_file

        self.cfg = cfg
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and self.device.index is not None:
            # Pinned: anything that allocates on "the current device" (cuDNN workspaces, autocast) uses this GPU.
            torch.cuda.set_device(self.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if cfg.plugin_files and cfg.guarded:
            from harness.scheduling.isolation import guard_paths

            guard_paths(cfg.guarded)
        for path in cfg.plugin_files:
            load_plugin_file(path)
        self.cache = ArtifactCache(cfg.cache_root / "artifacts")
        self.environment = environment(self.device)
        self.data: dict[str, ImageData] = {}

    def dataset(self, name: str) -> ImageData:
        """Load a dataset once per worker."""
        from harness.api.plugins import datasets

        if name not in self.data:
            self.data[name] = datasets.get(name).obj(data_dir=self.cfg.data_dir, cache_dir=self.cfg.cache_root)
        return self.data[name]

    def run(self, task: Task) -> Outcome:
        """Run one task, turning any exception into a failed outcome."""
        from harness.engine import pipeline

        t0 = time.perf_counter()
        job = task.job
        try:
            data = self.dataset(job.dataset)
            if task.stage == "dense":
                pipeline.dense_model(job, data, self.cache, self.device, fresh=self.cfg.fresh)
                return Outcome(task.id, True, seconds=time.perf_counter() - t0)
            if task.stage == "pruned":
                dense, _ = pipeline.dense_model(job, data, self.cache, self.device)
                pipeline.pruned_model(job, data, dense, self.cache, self.device, fresh=self.cfg.fresh)
                return Outcome(task.id, True, seconds=time.perf_counter() - t0)
            metrics, prov = pipeline.execute(job, data, self.cache, self.device)
            prov["environment"] = self.environment  # where the job really ran: this worker
            prov["precision"] = {"train": job.train.precision, "finetune": job.finetune.precision}
            return Outcome(task.id, True, metrics, prov, seconds=time.perf_counter() - t0)
        except Exception as exc:  # reported to the driver, which records it on the job
            text = "".join(traceback.format_exception(exc)).strip()
            transient = _is_transient(exc)
            del exc  # its traceback holds the failed step's tensors: drop them before freeing the cache
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # so the retry (or the next task) finds the memory an OOM left behind
            return Outcome(task.id, False, error=text, transient=transient, seconds=time.perf_counter() - t0)


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: I/O trouble, or running out of (device) memory, which another attempt may well not."""
    if isinstance(exc, TRANSIENT) or isinstance(exc, torch.OutOfMemoryError):
        return True
    # cuBLAS/cuDNN report exhausted device memory as plain RuntimeErrors.
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED"))


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the driver dies, so a killed run leaves no orphans computing."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(cfg: WorkerConfig, conn: Any) -> None:
    """Process entry point: receive tasks on `conn` until None or EOF."""
    _die_with_parent()
    if cfg.workdir is not None:  # the launcher already moved a sandboxed worker there
        os.chdir(cfg.workdir)
    # Ctrl-C, and a scheduler's SIGTERM, go to the whole process group; the driver decides what happens to running tasks.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        runner = TaskRunner(cfg)
    except BaseException as exc:
        conn.send(Outcome("<init>", False, error="".join(traceback.format_exception(exc)).strip()))
        return
    conn.send(Outcome("<ready>", True))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(runner.run(task))
    os._exit(0)
