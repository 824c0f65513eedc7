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
    dependents: int = 0  # eval tasks that wait on this one (for ordering)

    @property
    def priority(self) -> tuple[int, int]:
        """Earlier stages first (they unblock others), then the ones most jobs wait on."""
        return (STAGES.index(self.stage), -self.dependents)


def build_dag(jobs: list[JobSpec], artifacts: Path, fresh: bool = False) -> dict[str, Task]:
    """Tasks for `jobs`: one per distinct uncached dense and pruned model, one eval per job."""
    tasks: dict[str, Task] = {}
    for job in jobs:
        deps: list[str] = []
        dense_id = f"dense:{job.dense_key}"
        # A published dense model is restored by the first pruned or eval task that needs it: no training task.
        if fresh or not ((artifacts / "dense" / f"{job.dense_key}.pt").is_file() or published.find(job.dense_key)):
            tasks.setdefault(dense_id, Task(dense_id, "dense", job))
            deps.append(dense_id)
        if job.pruner.name != "none":
            pruned_id = f"pruned:{job.pruned_key}"
            if fresh or not (artifacts / "pruned" / f"{job.pruned_key}.pt").is_file():
                if pruned_id not in tasks:
                    tasks[pruned_id] = Task(pruned_id, "pruned", job, deps=list(deps))
                deps = [pruned_id]
        eval_id = f"eval:{job.key}"
        tasks[eval_id] = Task(eval_id, "eval", job, deps=deps)
    for t in tasks.values():
        if t.stage == "eval":
            for d in t.deps:
                tasks[d].dependents += 1
                for dd in tasks[d].deps:
                    tasks[dd].dependents += 1
    return tasks
