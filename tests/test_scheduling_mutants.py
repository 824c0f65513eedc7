"""Tests written against surviving mutants of the scheduler, the task DAG, the executors and the worker loop.

Each pins a user-visible scheduling behaviour a one-token change broke unnoticed: how many tasks run at once,
which failures are retried, what a timeout or an interrupt does to the executor and the database, how a job another
process held comes back, how workers are fed and replaced. Executors and workers are driven with in-memory stand-ins
(scripted executors, fake connections and processes), so no dataset, no training and no worker process is needed.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select, update

from harness.api.errors import HarnessError
from harness.api.metrics import Metric
from harness.engine import pipeline
from harness.engine.grid import parse_grid
from harness.scheduling import executors as executors_module
from harness.scheduling import scheduler as scheduler_module
from harness.scheduling import worker as worker_module
from harness.scheduling.dag import Task
from harness.scheduling.executors import InlineExecutor, LocalExecutor, cpu_threads
from harness.scheduling.scheduler import Policy
from harness.scheduling.worker import Outcome, TaskRunner, WorkerConfig, _is_transient, worker_main
from harness.store.models import Job, JobStatus, Run
from tests.test_identity_mutants import ScriptedExecutor, _scheduler, tiny

# ---- helpers ----


class RecordingExecutor(ScriptedExecutor):
    """A scripted executor that also records cancels, shutdowns and the most tasks it ever ran at once."""

    def __init__(self, slots: int = 1, script: Any = None, max_waits: int = 200) -> None:
        super().__init__(slots, script)
        self.cancelled: list[str] = []
        self.shutdowns = 0
        self.peak = 0
        self.waits = 0
        self.max_waits = max_waits

    def submit(self, task: Task) -> None:
        """Record the task and how many now run together."""
        super().submit(task)
        self.peak = max(self.peak, len(self.running))

    def wait(self, timeout: float) -> list[Outcome]:
        """As ScriptedExecutor, but a run that never ends fails the test instead of hanging it."""
        self.waits += 1
        if self.waits > self.max_waits:
            raise AssertionError("the scheduler never finished")
        return super().wait(timeout)

    def cancel(self, task_id: str) -> None:
        """Record and forget the task."""
        self.cancelled.append(task_id)
        super().cancel(task_id)

    def shutdown(self) -> None:
        """Count the call."""
        self.shutdowns += 1


def one_job(**changes: Any) -> dict[str, Any]:
    """The test grid cut down to its unpruned job."""
    return tiny(pruners=["none"], **changes)


def eval_id(sched: Any) -> str:
    """The id of a scheduler's only eval task."""
    (tid,) = [t for t, task in sched.tasks.items() if task.stage == "eval"]
    return tid


# ---- the scheduler: harness/scheduling/scheduler.py ----


def test_a_non_transient_failure_is_not_retried(tmp_path: Path) -> None:
    """A deterministic error (ValueError) fails the job at once, even with retries left."""

    def script(task: Task, n: int) -> Outcome:
        return Outcome(task.id, task.stage != "eval", error="ValueError: boom", transient=False)

    ex = RecordingExecutor(script=script)
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=3, backoff_s=0.0), one_job())
    tally = sched.run()
    assert ex.submitted.count(eval_id(sched)) == 1
    assert tally.failed == [(jobs[0].key, "ValueError: boom")] and store.job_status(jobs[0].key) is JobStatus.failed


def test_never_more_tasks_at_once_than_the_executor_has_slots(tmp_path: Path) -> None:
    """With one slot, tasks run one at a time even when several are ready."""
    ex = RecordingExecutor(slots=1)
    sched, _, _ = _scheduler(tmp_path, ex, Policy(retries=0), tiny(pruners=["l1_filter", "none"], sparsities=[0.3, 0.5]))
    sched.run()
    assert ex.peak == 1 and len(ex.submitted) == len(sched.tasks)


def test_a_timed_out_task_is_cancelled_on_the_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task past its time limit is stopped where it runs (its worker replaced), not only marked failed."""
    clock = [1000.0]
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: clock[0])
    ex = RecordingExecutor()
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(timeout_s=5.0, retries=0), one_job())
    sched._dispatch()  # the dense task
    dense = ex.running[0].id
    clock[0] += 6
    sched._check_timeouts()
    assert ex.cancelled == [dense] and sched.state[dense] == "failed"
    assert store.job_status(jobs[0].key) is JobStatus.failed


def test_an_interrupt_stops_the_workers_and_leaves_unstarted_jobs_pending(tmp_path: Path) -> None:
    """Ctrl-C during a dense task shuts the executor down; the job, never claimed, stays pending, not interrupted."""
    ex = RecordingExecutor()
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), one_job())

    def interrupt() -> None:
        raise KeyboardInterrupt

    ex.hooks = [interrupt]
    with pytest.raises(KeyboardInterrupt):
        sched.run()
    assert ex.shutdowns == 1 and ex.submitted == [f"dense:{jobs[0].dense_key}"]
    assert store.job_status(jobs[0].key) is JobStatus.pending


def test_progress_announces_the_start_of_each_job_once(tmp_path: Path) -> None:
    """"start" events are per job (eval task), not per dense or pruned stage."""
    events: list[str] = []
    ex = RecordingExecutor()
    sched, _, jobs = _scheduler(tmp_path, ex, Policy(retries=0), progress=lambda e, j, k, n: events.append(e))
    sched.run()
    assert events.count("start") == len(jobs) == 2 and events.count("done") == 2


def test_the_runs_progress_counters_reach_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat writes the run's done count, which `harness status` reads while a run goes on."""
    monkeypatch.setattr(scheduler_module, "HEARTBEAT_S", 0.0)
    ex = RecordingExecutor()
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), one_job())
    sched.run()
    with store.session() as s:
        run = s.scalars(select(Run).where(Run.id == sched.run_id)).one()
        assert (run.n_done, run.n_failed) == (1, 0)


def _held_by_other(store: Any, key: str, run_id: int) -> None:
    assert store.try_claim(key, run_id, "other", timedelta(minutes=10))


def test_a_job_whose_owner_died_is_taken_over_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job held by a process that stopped beating is retaken: this run claims it, runs it and stores its result."""
    monkeypatch.setattr(scheduler_module, "HEARTBEAT_S", 0.0)
    ex = RecordingExecutor(max_waits=30)
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), one_job())
    _held_by_other(store, jobs[0].key, sched.run_id)

    def owner_dies() -> None:
        with store.session() as s:
            s.execute(update(Job).values(heartbeat_at=datetime(2000, 1, 1, tzinfo=timezone.utc)))

    ex.hooks = [lambda: None, owner_dies]
    tally = sched.run()
    assert (tally.done, tally.by_others) == (1, 0) and ex.submitted.count(eval_id(sched)) == 1
    assert store.job_status(jobs[0].key) is JobStatus.done


def test_a_job_another_run_gave_up_is_run_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job the other process marked interrupted goes back to this run's queue and is done here."""
    monkeypatch.setattr(scheduler_module, "HEARTBEAT_S", 0.0)
    ex = RecordingExecutor(max_waits=30)
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), one_job())
    _held_by_other(store, jobs[0].key, sched.run_id)
    ex.hooks = [lambda: None, lambda: store.fail(jobs[0].key, "interrupted", owner="other", status=JobStatus.interrupted)]
    tally = sched.run()
    assert (tally.done, tally.by_others) == (1, 0) and store.job_status(jobs[0].key) is JobStatus.done


# ---- executors: harness/scheduling/executors.py ----


class FakeRunner:
    """A TaskRunner stand-in: every task succeeds."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, task: Task) -> Outcome:
        """Record the task and succeed."""
        self.ran.append(task.id)
        return Outcome(task.id, True)


def _task(tid: str = "dense:x") -> Task:
    job = parse_grid(one_job()).jobs[0]
    return Task(tid, "dense", job)


def test_the_inline_executor_runs_each_task_once_one_at_a_time() -> None:
    """One slot, taken by a queued task until wait() runs it; a second wait runs nothing again."""
    ex = InlineExecutor(WorkerConfig("cpu", 1, Path("."), None))
    ex.runner = FakeRunner()  # type: ignore[assignment]
    assert ex.free_slots() == 1
    ex.submit(_task())
    assert ex.free_slots() == 0
    assert [o.task_id for o in ex.wait(0.0)] == ["dense:x"]
    assert ex.free_slots() == 1 and ex.wait(0.0) == [] and ex.runner.ran == ["dense:x"]  # type: ignore[attr-defined]


class FakeProc:
    """A worker process stand-in whose death is a readable pipe (its sentinel)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        self.sentinel = self._r
        self.alive = True
        self.killed = 0
        self.exitcode: int | None = None

    def die(self, code: int = -9, signal_sentinel: bool = True) -> None:
        """Exit; the sentinel becomes ready unless told otherwise (the race where it lags)."""
        self.alive, self.exitcode = False, code
        if signal_sentinel:
            os.write(self._w, b"x")

    def is_alive(self) -> bool:
        """Whether it runs."""
        return self.alive

    def join(self, timeout: float | None = None) -> None:
        """Nothing to wait for."""

    def kill(self) -> None:
        """Count the kill and die."""
        self.killed += 1
        self.alive = False

    def close(self) -> None:
        """Release the pipe."""
        os.close(self._r)
        os.close(self._w)


class FakeWorker:
    """An executor's worker: the driver's end of a real pipe and a fake process."""

    def __init__(self) -> None:
        self.conn, self.child = Pipe()
        self.proc = FakeProc()
        self.task: Task | None = None
        self.started = 0.0
        self.ready = False


@pytest.fixture
def local() -> Any:
    """A LocalExecutor over two fake workers; _replace only records which worker it would replace."""
    ex = LocalExecutor([])
    ex.workers = [FakeWorker(), FakeWorker()]  # type: ignore[list-item]
    ex.configs = [None, None]  # type: ignore[list-item]
    ex.replaced = []  # type: ignore[attr-defined]
    ex._replace = lambda w: ex.replaced.append(ex.workers.index(w))  # type: ignore[method-assign, attr-defined]
    fakes = list(ex.workers)
    yield ex
    for w in fakes:
        w.proc.close()


def test_the_local_executor_feeds_idle_workers_and_frees_them_on_a_result(local: Any) -> None:
    """Each submit goes to an idle worker; a returned outcome makes that worker idle again."""
    w0, w1 = local.workers
    assert local.free_slots() == 2
    local.submit(_task("dense:a"))
    assert local.free_slots() == 1 and w0.task.id == "dense:a" and w0.child.recv().id == "dense:a"
    local.submit(_task("dense:b"))
    assert local.free_slots() == 0 and w1.task.id == "dense:b"
    w0.child.send(Outcome("dense:a", True))
    assert [o.task_id for o in local.wait(1.0)] == ["dense:a"]
    assert local.free_slots() == 1 and w0.task is None and local.replaced == []


def test_a_worker_that_dies_is_reported_as_a_transient_failure_and_replaced(local: Any) -> None:
    """A dead worker's task comes back as a retryable failure naming it, and the worker is replaced."""
    w0, _ = local.workers
    local.submit(_task("dense:a"))
    w0.proc.die()
    (out,) = local.wait(1.0)
    assert (out.task_id, out.ok, out.transient) == ("dense:a", False, True) and "died" in out.error
    assert local.replaced == [0]


def test_a_worker_whose_pipe_closed_before_its_sentinel_fired_is_still_reported(local: Any) -> None:
    """A worker gone (pipe at EOF, process dead) is reported even if its sentinel has not fired yet."""
    w0, _ = local.workers
    local.submit(_task("dense:a"))
    w0.child.close()
    w0.proc.die(signal_sentinel=False)
    (out,) = local.wait(1.0)
    assert (out.task_id, out.ok, out.transient) == ("dense:a", False, True) and local.replaced == [0]


def test_a_worker_that_fails_to_start_stops_the_executor_with_its_error(local: Any) -> None:
    """A worker's start-up error is raised with its last line; a ready message marks it ready."""
    w0, w1 = local.workers
    w0.child.send(Outcome("<ready>", True))
    local._await_ready(w0, time.monotonic() + 60)
    assert w0.ready
    w1.child.send(Outcome("<init>", False, error="Traceback ...\nImportError: no module named plugin"))
    with pytest.raises(HarnessError, match="failed to start: ImportError: no module named plugin"):
        local._await_ready(w1, time.monotonic() + 60)
    assert not w1.ready


def test_shutdown_asks_idle_workers_to_stop_and_kills_busy_ones(local: Any) -> None:
    """An idle worker gets the stop message (None); a busy one is killed, as its task cannot finish cleanly."""
    w0, w1 = local.workers
    w1.task = _task()
    local.shutdown()
    assert w0.child.poll(1.0) and w0.child.recv() is None
    assert w1.proc.killed >= 1 and not w1.child.poll(0.0) and local.workers == []


def test_cpu_threads_never_gives_a_worker_zero_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """N workers split the cores, at least one thread each; zero workers (inline) get every core."""
    monkeypatch.setattr(executors_module.os, "cpu_count", lambda: 4)
    assert [cpu_threads(n) for n in (0, 1, 2, 3, 4, 8)] == [4, 4, 2, 1, 1, 1]


# ---- the worker: harness/scheduling/worker.py ----


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OSError("No space left on device"), True),
        (ConnectionError("reset"), True),
        (EOFError(), True),
        (MemoryError(), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
        (ValueError("out of memory"), False),
        (KeyError("w"), False),
    ],
)
def test_which_errors_are_worth_a_retry(exc: BaseException, transient: bool) -> None:
    """I/O trouble and exhausted (device) memory are transient; other errors, whatever their text, are not."""
    assert _is_transient(exc) is transient


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[TaskRunner, list[tuple[str, dict[str, Any]]]]:
    """A --fresh TaskRunner whose pipeline steps only record how they were called."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def dense_model(job: Any, data: Any, cache: Any, device: Any, **kw: Any) -> tuple[str, None]:
        calls.append(("dense", kw))
        return "dense-net", None

    def pruned_model(job: Any, data: Any, dense: Any, cache: Any, device: Any, **kw: Any) -> None:
        calls.append(("pruned", kw | {"dense": dense}))

    def execute(job: Any, data: Any, cache: Any, device: Any) -> tuple[list[Metric], dict[str, Any]]:
        calls.append(("eval", {}))
        return [Metric("clean_acc", 0.5)], {"seed": job.seed}

    monkeypatch.setattr(pipeline, "dense_model", dense_model)
    monkeypatch.setattr(pipeline, "pruned_model", pruned_model)
    monkeypatch.setattr(pipeline, "execute", execute)
    r = TaskRunner(WorkerConfig("cpu", torch.get_num_threads(), tmp_path, None, fresh=True))
    r.dataset = lambda name: object()  # type: ignore[method-assign]
    return r, calls


def test_fresh_retrains_only_the_stage_a_task_is_for(runner: tuple[TaskRunner, list[tuple[str, dict[str, Any]]]]) -> None:
    """--fresh rebuilds a dense task's model and a pruned task's model; a pruned task reuses the dense model."""
    r, calls = runner
    job = parse_grid(tiny()).jobs[1]
    assert r.run(Task("dense:k", "dense", job)).ok
    assert r.run(Task("pruned:k", "pruned", job)).ok
    assert calls == [("dense", {"fresh": True}), ("dense", {}), ("pruned", {"fresh": True, "dense": "dense-net"})]


def test_an_eval_outcome_carries_its_metrics_and_the_workers_environment(runner: tuple[TaskRunner, list[tuple[str, dict[str, Any]]]]) -> None:
    """An eval task returns the pipeline's metrics, with the environment and precision of where it really ran."""
    r, calls = runner
    job = parse_grid(tiny()).jobs[0]
    out = r.run(Task("eval:k", "eval", job))
    assert out.ok and out.metrics == [Metric("clean_acc", 0.5)] and [c for c, _ in calls] == ["eval"]
    assert out.provenance["environment"] is r.environment and out.provenance["seed"] == job.seed
    assert out.provenance["precision"] == {"train": job.train.precision, "finetune": job.finetune.precision}


def test_a_worker_with_no_thread_count_keeps_torchs_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """threads = 0 means "leave torch's thread count alone", never set_num_threads(0)."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    TaskRunner(WorkerConfig("cpu", 0, tmp_path, None))
    TaskRunner(WorkerConfig("cpu", 3, tmp_path, None))
    assert calls == [3]


class FakeConn:
    """A worker's end of the pipe: hands out scripted messages, records what is sent, EOF when out of them."""

    def __init__(self, incoming: list[Any]) -> None:
        self.incoming, self.sent = list(incoming), []

    def recv(self) -> Any:
        """The next message, or EOF."""
        if not self.incoming:
            raise EOFError
        return self.incoming.pop(0)

    def send(self, obj: Any) -> None:
        """Record the message."""
        self.sent.append(obj)


@pytest.fixture
def quiet_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """worker_main without its process-wide effects (parent-death signal, ignored Ctrl-C) on the test process."""
    monkeypatch.setattr(worker_module, "_die_with_parent", lambda: None)
    monkeypatch.setattr(worker_module.signal, "signal", lambda *a: None)


def test_the_worker_loop_says_ready_runs_tasks_and_stops_on_none(quiet_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker announces it is ready, answers each task, and exits at the stop message without reading further."""
    monkeypatch.setattr(worker_module, "TaskRunner", lambda cfg: FakeRunner())
    conn = FakeConn([_task("dense:a"), None, _task("dense:b")])
    worker_main(WorkerConfig("cpu", 1, Path("."), None), conn)
    assert [(o.task_id, o.ok) for o in conn.sent] == [("<ready>", True), ("dense:a", True)]
    assert [t.id for t in conn.incoming] == ["dense:b"]


def test_a_worker_that_cannot_set_up_reports_a_failed_start(quiet_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that fails to load is sent to the driver as a failed start, with its error."""

    def broken(cfg: WorkerConfig) -> None:
        raise ImportError("no module named plugin")

    monkeypatch.setattr(worker_module, "TaskRunner", broken)
    conn = FakeConn([_task()])
    worker_main(WorkerConfig("cpu", 1, Path("."), None), conn)
    (out,) = conn.sent
    assert (out.task_id, out.ok) == ("<init>", False) and "ImportError: no module named plugin" in out.error
