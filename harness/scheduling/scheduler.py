"""The driver: dispatches ready tasks to an executor, enforces timeouts and retries, and alone writes the DB."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from harness.api.config import JobSpec
from harness.scheduling.dag import Task
from harness.scheduling.executors import Executor
from harness.scheduling.signals import signame
from harness.scheduling.worker import Outcome
from harness.store.models import JobStatus
from harness.store.session import Store

HEARTBEAT_S = 5.0
# A running job whose heartbeat is older than this is taken to be abandoned (a dead owner on this host is
# detected at once through its pid).
STALE_AFTER = timedelta(seconds=60)

ProgressFn = Callable[[str, JobSpec, int, int], None]


@dataclass
class Policy:
    """Timeouts and retries."""

    timeout_s: float | None = None
    retries: int = 1
    backoff_s: float = 2.0


@dataclass
class Tally:
    """What the scheduler did."""

    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    by_others: int = 0


def _error_line(text: str) -> str:
    """The last non-blank line of an error: a traceback ends with the exception's own message."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else text


class Scheduler:
    """Runs a task DAG to completion on an executor."""

    def __init__(self, tasks: dict[str, Task], store: Store, run_id: int, owner: str, executor: Executor,
                 policy: Policy, progress: ProgressFn | None = None) -> None:
        self.tasks, self.store, self.run_id, self.owner = tasks, store, run_id, owner
        self.executor, self.policy, self.progress = executor, policy, progress
        self.state = {tid: "waiting" for tid in tasks}
        self.attempts = {tid: 0 for tid in tasks}
        self.not_before = {tid: 0.0 for tid in tasks}
        self.started: dict[str, float] = {}
        self.foreign: set[str] = set()  # eval tasks another process is running
        self.tally = Tally()
        self.n_eval = sum(1 for t in tasks.values() if t.stage == "eval")
        self.finished = 0

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _ready(self) -> list[Task]:
        now = time.monotonic()
        out = [
            t for tid, t in self.tasks.items()
            if self.state[tid] == "waiting" and self.not_before[tid] <= now and all(self.state[d] == "done" for d in t.deps)
        ]
        return [t for _, _, t in heapq.nsmallest(len(out), ((t.priority, i, t) for i, t in enumerate(out)))]

    def _report(self, event: str, task: Task) -> None:
        if task.stage == "eval":
            self.finished += event in ("done", "failed")
            if self.progress:
                self.progress(event, task.job, self.finished, self.n_eval)

    def _fail(self, task: Task, error: str) -> None:
        self.state[task.id] = "failed"
        if task.stage == "eval":
            self.store.fail(task.job.key, error, owner=self.owner)
            self.tally.failed.append((task.job.key, _error_line(error)))
            self._report("failed", task)
            return
        # A failed shared stage fails every job that needed it, with the stage's error.
        for t in self.tasks.values():
            if task.id in t.deps and self.state[t.id] == "waiting":
                self._fail(t, f"{task.stage} stage failed for this job's model: {error}")

    # -- main loop ---------------------------------------------------------------------------------------
    def run(self) -> Tally:
        """Dispatch until every task is done or failed; a stop request marks running jobs interrupted and re-raises."""
        last_beat = 0.0
        try:
            while any(s in ("waiting", "running") for s in self.state.values()) or self.foreign:
                self._dispatch()
                for out in self.executor.wait(timeout=0.5):
                    self._handle(out)
                self._check_timeouts()
                if time.monotonic() - last_beat > HEARTBEAT_S:
                    last_beat = time.monotonic()
                    running = [self.tasks[t].job.key for t, s in self.state.items() if s == "running" and self.tasks[t].stage == "eval"]
                    self.store.heartbeat(running, self.owner, self.run_id, self.tally.done, len(self.tally.failed))
                    self._poll_foreign()
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP turned into Interrupted by the CLI
            # Workers die first, so none can finish a job after it was marked; each mark is one transaction.
            self.executor.shutdown()
            for tid, s in self.state.items():
                if s == "running" and self.tasks[tid].stage == "eval":
                    self.store.fail(self.tasks[tid].job.key, f"interrupted ({signame(exc)}); rerun to finish", owner=self.owner, status=JobStatus.interrupted)
            raise
        return self.tally

    def _dispatch(self) -> None:
        for task in self._ready():
            if self.executor.free_slots() <= 0:
                return
            if task.stage == "eval" and not self.store.try_claim(task.job.key, self.run_id, self.owner, STALE_AFTER):
                self.state[task.id] = "foreign"
                self.foreign.add(task.id)
                continue
            self.state[task.id] = "running"
            self.started[task.id] = time.monotonic()
            self.attempts[task.id] += 1
            if self.progress and task.stage == "eval":
                self.progress("start", task.job, self.finished, self.n_eval)
            self.executor.submit(task)

    def _handle(self, out: Outcome) -> None:
        task = self.tasks.get(out.task_id)
        if task is None or self.state[task.id] != "running":
            return
        if out.ok:
            self.state[task.id] = "done"
            if task.stage == "eval":
                if self.store.complete(task.job.key, out.metrics, out.provenance, out.seconds, owner=self.owner):
                    self.tally.done += 1
                else:
                    self.tally.by_others += 1
                self._report("done", task)
            return
        if out.transient and self.attempts[task.id] <= self.policy.retries:
            # Exponential backoff before the retry.
            self.state[task.id] = "waiting"
            self.not_before[task.id] = time.monotonic() + self.policy.backoff_s * 2 ** (self.attempts[task.id] - 1)
            if task.stage == "eval":  # release the claim; the retry claims the job again
                self.store.fail(task.job.key, out.error, owner=self.owner, status=JobStatus.pending)
            return
        self._fail(task, out.error)

    def _check_timeouts(self) -> None:
        limit = self.policy.timeout_s
        if not limit:
            return
        now = time.monotonic()
        for tid, s in list(self.state.items()):
            if s == "running" and now - self.started[tid] > limit:
                self.executor.cancel(tid)
                self._fail(self.tasks[tid], f"TimeoutError: {self.tasks[tid].stage} task timed out after {limit:g} s")

    def _poll_foreign(self) -> None:
        """Jobs another process was running: count them when done, take them over if it died."""
        for tid in list(self.foreign):
            key = self.tasks[tid].job.key
            status = self.store.job_status(key)
            if status is JobStatus.done:
                self.foreign.discard(tid)
                self.state[tid] = "done"
                self.tally.by_others += 1
                self._report("done", self.tasks[tid])
            elif status is not JobStatus.running or self.store.try_claim(key, self.run_id, self.owner, STALE_AFTER):
                if status is JobStatus.running:  # we just claimed an abandoned job: run it
                    self.store.fail(key, "owner vanished; retaken", owner=self.owner, status=JobStatus.pending)
                self.foreign.discard(tid)
                self.state[tid] = "waiting"
