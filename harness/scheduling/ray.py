"""Ray executor: the same task DAG as Ray tasks (GPU resources where asked); only the driver writes the DB."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from harness.api.errors import HarnessError
from harness.api.paths import REPO
from harness.scheduling.dag import Task
from harness.scheduling.worker import Outcome, TaskRunner, WorkerConfig

# One TaskRunner per Ray worker process, so datasets are loaded once per process, as in local workers.
_RUNNERS: dict[str, TaskRunner] = {}


def _run_task(cfg: WorkerConfig, task: Task) -> Outcome:
    """Body of the Ray task."""
    key = repr(cfg)
    if key not in _RUNNERS:
        _RUNNERS[key] = TaskRunner(cfg)
    return _RUNNERS[key].run(task)


class RayExecutor:
    """Submits tasks to Ray (a local Ray by default, a cluster with `address`), at most `slots` at once."""

    def __init__(self, configs: list[WorkerConfig], address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise HarnessError("--executor ray needs Ray: pip install 'harness[ray]' (or pip install ray).") from None
        self.ray = ray
        self.configs = configs
        self.slots = len(configs)
        self.address = address
        self.gpu = configs[0].device.startswith("cuda")
        self.running: dict[Any, Task] = {}
        self.started_ray = False

    def start(self) -> None:
        """Connect to (or start) Ray and define the remote task."""
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                # Workers on other machines need this checkout's code.
                kwargs["runtime_env"] = {"working_dir": str(REPO), "excludes": ["*.db", ".harness", "site", ".git"]}
            else:
                kwargs["num_cpus"] = self.slots if not self.gpu else None
                # Ray starts its workers at niceness 15, so any other busy process on the machine starves them
                # (a tiny grid took >15 min beside a training run); harness tasks are the work, not background.
                kwargs["_system_config"] = {"worker_niceness": 0}
            ray.init(address=self.address, **kwargs)
            self.started_ray = True
        cfg = self.configs[0]
        # Ray gives each task its own CUDA_VISIBLE_DEVICES: the task sees its GPU as cuda:0.
        self.cfg = WorkerConfig("cuda:0" if self.gpu else "cpu", cfg.threads, cfg.cache_root, cfg.data_dir, cfg.plugin_files, cfg.fresh, cfg.guarded)
        # --workers N per GPU: each task asks for 1/N of a card, so Ray runs N of them side by side on one.
        per_gpu = max(Counter(c.device for c in self.configs).values())
        self.remote = ray.remote(num_gpus=1 / per_gpu if self.gpu else 0, num_cpus=0 if self.gpu else 1, max_retries=0)(_run_task)

    def free_slots(self) -> int:
        """Tasks that may still be submitted."""
        return self.slots - len(self.running)

    def submit(self, task: Task) -> None:
        """Start a Ray task."""
        self.running[self.remote.remote(self.cfg, task)] = task

    def wait(self, timeout: float) -> list[Outcome]:
        """Outcomes of finished Ray tasks; a lost worker is a transient failure."""
        if not self.running:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        out = []
        for ref in ready:
            task = self.running.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except Exception as exc:  # RayTaskError, WorkerCrashedError, ...: the driver records it
                out.append(Outcome(task.id, False, error=f"{type(exc).__name__}: {exc}", transient=True))
        return out

    def cancel(self, task_id: str) -> None:
        """Force-cancel the Ray task running `task_id`."""
        for ref, task in list(self.running.items()):
            if task.id == task_id:
                self.ray.cancel(ref, force=True)
                del self.running[ref]

    def shutdown(self) -> None:
        """Cancel what runs; stop Ray if this executor started it."""
        for ref in list(self.running):
            self.ray.cancel(ref, force=True)
        self.running.clear()
        if self.started_ray:
            self.ray.shutdown()
