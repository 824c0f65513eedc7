"""The job DAG: dense training -> pruning + fine-tuning -> evaluation, each shared stage a task run once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.api.config import JobSpec
from harness.engine import published

STAGES = ("dense", "pruned", "eval")


@dataclass
class Task:
    """One unit of work for a worker: a stage of a representative job."""

    id: str
    stage: str
    job: JobSpec
    deps: list[str] = field(default_factory=list)
    order: int = 0  # position in the grid of the first job that needs this task

    @property
    def priority(self) -> tuple[bool, int, int]:
        """Dense models first, then jobs in grid order, each one's stages in turn.

        Every job waits on a dense model, so those go first. After that, finished jobs reach the database as the
        run goes: a run that stops early (a session's end, a time limit) leaves complete rows behind, not a cache of
        fine-tuned models with no results. A worker with nothing ready for the next job starts a later one's stages.
        """
        return (self.stage != "dense", self.order, STAGES.index(self.stage))


def build_dag(jobs: list[JobSpec], artifacts: Path, fresh: bool = False) -> dict[str, Task]:
    """Tasks for `jobs`: one per distinct uncached dense and pruned model, one eval per job."""
    tasks: dict[str, Task] = {}
    for order, job in enumerate(jobs):
        deps: list[str] = []
        dense_id = f"dense:{job.dense_key}"
        # A published dense model is restored by the first pruned or eval task that needs it: no training task.
        if fresh or not ((artifacts / "dense" / f"{job.dense_key}.pt").is_file() or published.find(job.dense_key)):
            tasks.setdefault(dense_id, Task(dense_id, "dense", job, order=order))
            deps.append(dense_id)
        if job.pruner.name != "none":
            pruned_id = f"pruned:{job.pruned_key}"
            if fresh or not (artifacts / "pruned" / f"{job.pruned_key}.pt").is_file():
                if pruned_id not in tasks:
                    tasks[pruned_id] = Task(pruned_id, "pruned", job, deps=list(deps), order=order)
                deps = [pruned_id]
        eval_id = f"eval:{job.key}"
        tasks[eval_id] = Task(eval_id, "eval", job, deps=deps, order=order)
    return tasks
