"""Executors: where tasks run. Inline (in the driver), local worker processes, or Ray tasks."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from multiprocessing.connection import wait
from typing import Any, Protocol

from harness.api.errors import HarnessError
from harness.scheduling.dag import Task
from harness.scheduling.isolation import spawn_executable
from harness.scheduling.worker import Outcome, TaskRunner, WorkerConfig, worker_main

WORKER_START_TIMEOUT_S = 300


class Executor(Protocol):
    """What the scheduler needs from an executor."""

    slots: int

    def start(self) -> None:
        """Bring workers up."""

    def free_slots(self) -> int:
        """How many more tasks can be submitted now."""

    def submit(self, task: Task) -> None:
        """Start a task on a free slot."""

    def wait(self, timeout: float) -> list[Outcome]:
        """Outcomes that arrived within `timeout` seconds."""

    def cancel(self, task_id: str) -> None:
        """Stop a running task (its worker is replaced)."""

    def shutdown(self) -> None:
        """Stop every worker."""


class InlineExecutor:
    """Runs tasks in the driver process, one at a time (debugging, profiling; no timeouts)."""

    slots = 1

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.queue: list[Task] = []

    def start(self) -> None:
        """Set up the in-process runner."""
        self.runner = TaskRunner(self.cfg)

    def free_slots(self) -> int:
        """One task at a time."""
        return 0 if self.queue else 1

    def submit(self, task: Task) -> None:
        """Queue the task; it runs in the next wait()."""
        self.queue.append(task)

    def wait(self, timeout: float) -> list[Outcome]:
        """Run the queued task now."""
        out = [self.runner.run(t) for t in self.queue]
        self.queue.clear()
        return out

    def cancel(self, task_id: str) -> None:
        """Nothing runs in the background."""

    def shutdown(self) -> None:
        """Nothing to stop."""


class _Worker:
    """A worker process and the task it is running."""

    def __init__(self, ctx: Any, cfg: WorkerConfig) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(cfg, child), daemon=True)
        with spawn_executable(cfg.launcher):  # a sandboxed worker enters its namespaces before importing torch
            self.proc.start()
        child.close()
        self.task: Task | None = None
        self.started = 0.0
        self.ready = False


class LocalExecutor:
    """One worker process per GPU (or N on the CPU), spawned once and fed one task at a time."""

    def __init__(self, configs: list[WorkerConfig]) -> None:
        self.configs = configs
        self.slots = len(configs)
        self.ctx = mp.get_context("spawn")  # fork after torch threads exist can deadlock
        self.workers: list[_Worker] = []

    def start(self) -> None:
        """Spawn every worker and wait until each has imported torch and its plugins."""
        self.workers = [_Worker(self.ctx, c) for c in self.configs]
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        for w in self.workers:
            self._await_ready(w, deadline)

    def _await_ready(self, w: _Worker, deadline: float) -> None:
        while not w.ready:
            if not w.conn.poll(max(0.0, deadline - time.monotonic())):
                raise HarnessError("A worker process did not start in time.")
            msg: Outcome = w.conn.recv()
            if not msg.ok:
                self.shutdown()
                raise HarnessError(f"A worker process failed to start: {msg.error.strip().splitlines()[-1]}")
            w.ready = True

    def free_slots(self) -> int:
        """Idle workers."""
        return sum(1 for w in self.workers if w.task is None)

    def submit(self, task: Task) -> None:
        """Send `task` to an idle worker."""
        w = next(w for w in self.workers if w.task is None)
        w.task, w.started = task, time.monotonic()
        w.conn.send(task)

    def wait(self, timeout: float) -> list[Outcome]:
        """Collect finished tasks; a worker that died is reported as a transient failure and replaced."""
        busy = [w for w in self.workers if w.task is not None]
        if not busy:
            time.sleep(min(timeout, 0.05))
            return []
        ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout)
        out: list[Outcome] = []
        for w in busy:
            if w.conn in ready:
                try:
                    out.append(w.conn.recv())
                    w.task = None
                    continue
                except (EOFError, OSError):
                    pass
            if w.proc.sentinel in ready or not w.proc.is_alive():
                w.proc.join(1)
                task = w.task
                assert task is not None
                out.append(Outcome(task.id, False, error=f"worker process died (exit code {w.proc.exitcode}) while running {task.id}", transient=True))
                self._replace(w)
        return out

    def _replace(self, w: _Worker) -> None:
        idx = self.workers.index(w)
        cfg = self.configs[idx]
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(5)
        nw = _Worker(self.ctx, cfg)
        self._await_ready(nw, time.monotonic() + WORKER_START_TIMEOUT_S)
        self.workers[idx] = nw

    def cancel(self, task_id: str) -> None:
        """Kill the worker running `task_id` and start a fresh one in its place."""
        for w in self.workers:
            if w.task is not None and w.task.id == task_id:
                w.proc.kill()
                w.proc.join(5)
                self._replace(w)

    def shutdown(self) -> None:
        """Ask idle workers to stop; kill busy ones."""
        for w in self.workers:
            try:
                if w.task is None:
                    w.conn.send(None)
                else:
                    w.proc.kill()
            except (OSError, BrokenPipeError):
                pass
        for w in self.workers:
            w.proc.join(5)
            if w.proc.is_alive():
                w.proc.kill()
        self.workers = []


def cpu_threads(workers: int) -> int:
    """Threads per worker so that N workers do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(workers, 1))
