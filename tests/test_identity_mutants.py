"""Tests written against surviving mutants of job identity, resume and storage: each pins a behaviour that a one-token
change of the grid, checkpoint, store, scheduler or DAG code broke unnoticed.

A result must never be recomputed once finished, nor reused once its inputs changed. Every expected value is computed
independently of the code under test (hashlib on the file's bytes, states written by hand, counts by hand), on tiny
inputs, with no datasets, no training and no worker processes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import tomllib
import torch
from sqlalchemy import select, update

from harness.api import config as config_module
from harness.api.config import JobSpec
from harness.api.metrics import Metric
from harness.api.plugins import architectures
from harness.engine import published
from harness.engine.checkpoints import check_fits, sha256_file
from harness.api.errors import GridError
from harness.engine.grid import MAX_JOBS, check_bounds, parse_grid
from harness.scheduling import scheduler as scheduler_module
from harness.scheduling.dag import Task, build_dag
from harness.scheduling.scheduler import Policy, Scheduler
from harness.scheduling.stubs import register_stubs, unregister_stubs
from harness.scheduling.worker import Outcome
from harness.store.models import Job, JobStatus
from harness.store.queries import JobRecord, failed_jobs, job_records, result_rows
from harness.store.session import Store
from tests.conftest import TINY_GRID

FIELDS = {"dataset": "d", "architecture": "a", "pruner": "p", "pruner_label": "p", "sparsity": 0.5, "seed": 0, "dense_key": "dk", "pruned_key": "pk"}
LONG_AGO = timedelta(seconds=-1)  # a stale_after every heartbeat is older than


def tiny(**changes: Any) -> dict[str, Any]:
    """The test grid as a table, with top-level keys replaced."""
    raw = tomllib.loads(TINY_GRID)
    raw.update(copy.deepcopy(changes))
    return raw


def pruned_job(raw: dict[str, Any]) -> JobSpec:
    """The one l1_filter job of a grid."""
    (job,) = [j for j in parse_grid(raw).jobs if j.pruner.name == "l1_filter"]
    return job


# --- job keys: harness/engine/grid.py, harness/api/config.py, harness/api/keys.py ----------------------------------


NUMBER_CHANGES: dict[str, dict[str, Any]] = {
    "seed": {"seeds": [1]},
    "sparsity": {"sparsities": [0.25]},
    "architecture": {"architectures": ["resnet20"]},
    "train budget": {"train": {"epochs": 5, "batch_size": 32, "lr": 0.05, "n_train": 800}},
    "train subset": {"train": {"epochs": 4, "batch_size": 32, "lr": 0.05, "n_train": 700}},
    "fine-tune budget": {"finetune": {"epochs": 2, "batch_size": 32}},
    "eval examples": {"eval": {"n_examples": 50, "batch_size": 100, "measure_latency": False, "sanity_examples": 0, "reference": {"linf": ["pgd_linf"]}}},
    "pruner parameters": {"pruners": ["none", {"name": "l1_filter", "schedule": "iterative", "steps": 2}]},
    "match": {"pruners": ["none", "l1_filter"], "match": "macs"},
}


@pytest.mark.parametrize("what", list(NUMBER_CHANGES))
def test_every_input_that_changes_numbers_changes_the_job_key(what: str) -> None:
    """Two grids that differ only in one input that changes the numbers never share a job key."""
    base = pruned_job(tiny())
    other = pruned_job(tiny(**NUMBER_CHANGES[what]))
    assert other.key != base.key


def test_attack_eps_and_attack_parameters_are_key_material() -> None:
    """Another eps, or the same attack with other parameters, is another job."""
    base = tiny()
    keys = {pruned_job(base).key}
    for change in ({"eps": [0.2]}, {"steps": 4}):
        raw = copy.deepcopy(base)
        for a in raw["attacks"]:
            if a["name"] == "pgd_linf":
                a.update(change)
            if "eps" in change:
                a["eps"] = change["eps"]
        keys.add(pruned_job(raw).key)
    assert len(keys) == 3


def test_the_protocol_versions_are_key_material(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new evaluation protocol re-evaluates (new job key) the cached models (same model keys); a new model protocol retrains."""
    job = pruned_job(tiny())
    key, dense_key, pruned_key = job.key, job.dense_key, job.pruned_key
    monkeypatch.setattr(config_module, "PROTOCOL_VERSION", config_module.PROTOCOL_VERSION + 1)
    assert (job.key != key, job.dense_key, job.pruned_key) == (True, dense_key, pruned_key)
    monkeypatch.setattr(config_module, "MODEL_PROTOCOL", config_module.MODEL_PROTOCOL + 1)
    assert job.dense_key != dense_key and job.pruned_key != pruned_key


def test_a_job_key_is_sixteen_hex_digits_of_the_sha256_of_its_sorted_json() -> None:
    """The key is the first 16 hex digits (64 bits) of sha256 over the parameters as sorted, compact JSON."""
    for job in parse_grid(tiny()).jobs:
        text = json.dumps(job.params(), sort_keys=True, separators=(",", ":"), default=str)
        assert job.key == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_a_pruner_named_twice_in_two_spellings_is_one_job() -> None:
    """`"l1_filter"` and `{name = "l1_filter"}` are the same entry: one job each, not two rows under one key."""
    g = parse_grid(tiny(pruners=["none", {"name": "none"}, "l1_filter", {"name": "l1_filter"}]))
    assert sorted(j.pruner.name for j in g.jobs) == ["l1_filter", "none"]


def test_a_replaced_submission_never_reuses_the_old_results() -> None:
    """A submitted pruner's file sha256 is part of the key: same name, other file, other jobs."""
    keys = []
    for sha in ("a" * 64, "b" * 64):
        added = register_stubs({"sub_mutant": {"family": "filter", "sha256": sha}})
        try:
            (job,) = parse_grid(tiny(pruners=["sub_mutant"])).jobs
        finally:
            unregister_stubs(added)
        assert job.pruner.code == sha
        keys.append(job.key)
    assert keys[0] != keys[1]


def test_a_grid_of_exactly_max_jobs_is_accepted_and_one_more_is_refused() -> None:
    """The job bound is inclusive: 10 seeds x 10,000 sparsities pass, 11 seeds x (1 dense + 9,090 sparsities) do not."""
    assert MAX_JOBS == 100_000
    at = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["l1_filter"], "seeds": list(range(10)),
          "sparsities": [i / 10_000 for i in range(10_000)]}
    check_bounds(at, "grid")
    over = at | {"pruners": ["none", "l1_filter"], "seeds": list(range(11)), "sparsities": [i / 9_090 for i in range(9_090)]}
    with pytest.raises(GridError, match="expands to 100,001 jobs"):
        check_bounds(over, "grid")


# --- checkpoint sha256: harness/engine/checkpoints.py -----------------------------------------------------------------


def test_sha256_file_is_the_whole_files_sha256(tmp_path: Path) -> None:
    """All 64 hex digits, over every byte: two 2.5 MiB files that differ only in their last byte hash apart."""
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    body = bytes(range(256)) * (10 * 1024)  # 2.5 MiB
    a.write_bytes(body + b"\x00")
    b.write_bytes(body + b"\x01")
    assert sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest() and len(sha256_file(a)) == 64
    assert sha256_file(b) == hashlib.sha256(b.read_bytes()).hexdigest() != sha256_file(a)


def test_sha256_file_sees_a_rewrite_of_the_same_size_or_the_same_mtime(tmp_path: Path) -> None:
    """The memo is keyed by size and mtime: a file rewritten in place is hashed again when either changes."""
    path = tmp_path / "seed0.pt"
    path.write_bytes(b"first")
    first = sha256_file(path)
    st = path.stat()
    path.write_bytes(b"other")  # same size, later mtime
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert sha256_file(path) == hashlib.sha256(b"other").hexdigest() != first
    st = path.stat()
    path.write_bytes(b"longer bytes")  # other size, mtime forced back (a coarse clock, a copy keeping times)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha256_file(path) == hashlib.sha256(b"longer bytes").hexdigest()


def test_one_checkpoint_is_fitted_to_every_architecture_that_names_it(tmp_path: Path) -> None:
    """A small_cnn file also named for resnet20 is refused for resnet20 before anything runs."""
    from types import SimpleNamespace

    from harness.api.errors import CheckpointError
    from harness.api.nets import Normalized

    torch.manual_seed(0)
    path = tmp_path / "dense.pt"
    mean, std = torch.zeros(1), torch.ones(1)
    torch.save(Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), mean, std).state_dict(), path)
    raw = tiny(pruners=["none"], architectures=["small_cnn", "resnet20"])
    raw["train"] = {"checkpoint": str(path)}
    data = SimpleNamespace(num_classes=10, in_channels=1, mean=mean, std=std)
    with pytest.raises(CheckpointError, match="architecture 'resnet20'"):
        check_fits(parse_grid(raw).jobs, data)  # type: ignore[arg-type]


# --- resume and storage: harness/store/session.py, harness/store/queries.py -----------------------------------------


def _store_with_states(tmp_path: Path) -> Store:
    """Jobs k_pending, k_running, k_done, k_failed, k_interrupted, each in the state its name says."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 5, {})
    for state in ("pending", "running", "done", "failed", "interrupted"):
        store.add_jobs(run, [(f"k_{state}", FIELDS | {"seed": len(state)})])
        if state != "pending":
            assert store.try_claim(f"k_{state}", run, "me", timedelta(minutes=10))
        if state == "done":
            store.complete("k_done", [Metric("clean_acc", 0.9)], {"by": "me"}, 1.0, owner="me")
        elif state in ("failed", "interrupted"):
            store.fail(f"k_{state}", "boom", owner="me", status=JobStatus(state))
    return store


def test_only_done_jobs_count_as_done_and_only_those_asked_for(tmp_path: Path) -> None:
    """A pending, running, failed or interrupted job is recomputed on resume; done keys not asked about are not returned."""
    store = _store_with_states(tmp_path)
    everything = [f"k_{s}" for s in ("pending", "running", "done", "failed", "interrupted")]
    assert store.done_keys(everything) == {"k_done"}
    assert store.done_keys(["k_failed", "unknown"]) == set()
    assert store.job_status("k_failed") is JobStatus.failed and store.job_status("k_interrupted") is JobStatus.interrupted


def test_a_done_job_is_never_claimed_again_and_an_unfinished_one_is(tmp_path: Path) -> None:
    """try_claim refuses a done job and a live one; it takes pending, failed, interrupted and abandoned running jobs."""
    store = _store_with_states(tmp_path)
    assert not store.try_claim("k_done", 1, "other", LONG_AGO)
    assert not store.try_claim("k_running", 1, "other", timedelta(minutes=10))  # its heartbeat is fresh
    for key in ("k_pending", "k_failed", "k_interrupted", "k_running"):
        assert store.try_claim(key, 1, "other", LONG_AGO), key
    with store.session() as s:
        attempts = dict(s.execute(select(Job.key, Job.attempts)).all())
    # Each claim counts one attempt: pending 0 -> 1, the others 1 -> 2, the done job untouched at 1.
    assert attempts == {"k_pending": 1, "k_running": 2, "k_done": 1, "k_failed": 2, "k_interrupted": 2}
    assert store.job_status("k_done") is JobStatus.done


def test_fail_never_touches_a_done_job_or_another_owners_running_one(tmp_path: Path) -> None:
    """A late failure or interruption mark leaves a finished result done; a job nobody runs fails for its owner's dependency."""
    store = _store_with_states(tmp_path)
    store.fail("k_done", "late interruption", owner="me", status=JobStatus.interrupted)
    store.fail("k_done", "late failure")
    assert store.job_status("k_done") is JobStatus.done
    with store.session() as s:
        assert s.scalars(select(Job.error).where(Job.key == "k_done")).one() is None
    store.fail("k_running", "not mine", owner="other")
    assert store.job_status("k_running") is JobStatus.running
    store.fail("k_pending", "dense stage failed", owner="me")  # never claimed: owner is empty
    assert store.job_status("k_pending") is JobStatus.failed


def test_requeue_reopens_done_jobs_only_and_keeps_their_results_until_replaced(tmp_path: Path) -> None:
    """--fresh requeues a done job (pending, so it is claimed again); its old rows stay until the new result lands."""
    store = _store_with_states(tmp_path)
    everything = [f"k_{s}" for s in ("pending", "running", "done", "failed", "interrupted")]
    assert store.requeue(everything) == 1
    assert [store.job_status(k) for k in everything] == [JobStatus.pending, JobStatus.running, JobStatus.pending,
                                                         JobStatus.failed, JobStatus.interrupted]
    with store.session() as s:
        assert [r.value for r in result_rows(s)] == []  # not done: not reported
        assert s.scalars(select(Job.id).where(Job.key == "k_done")).one() is not None
    assert store.try_claim("k_done", 1, "me", timedelta(minutes=10))
    assert store.complete("k_done", [Metric("clean_acc", 0.8)], {"by": "me"}, 1.0, owner="me")
    with store.session() as s:
        assert [(r.job_key, r.value) for r in result_rows(s)] == [("k_done", 0.8)]


def test_complete_is_refused_for_a_job_released_or_marked_failed(tmp_path: Path) -> None:
    """Our late result for a job we gave back (pending) or that was marked failed is not stored as done."""
    store = _store_with_states(tmp_path)
    store.fail("k_running", "retry later", owner="me", status=JobStatus.pending)
    assert not store.complete("k_running", [Metric("clean_acc", 0.1)], {}, 1.0, owner="me")
    assert not store.complete("k_failed", [Metric("clean_acc", 0.1)], {}, 1.0, owner="me")
    assert store.job_status("k_running") is JobStatus.pending and store.job_status("k_failed") is JobStatus.failed
    assert store.done_keys(["k_running", "k_failed"]) == set()


def test_completing_again_replaces_the_results_and_keeps_provenance(tmp_path: Path) -> None:
    """A recomputed job holds its new numbers and outcomes only, and the provenance it was stored with."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 1, {})
    for value, bits in ((0.5, b"\x0f"), (0.75, b"\xf0")):
        store.claim("k", run, FIELDS)
        store.complete("k", [Metric("clean_acc", value, outcomes=bits, n_examples=8), Metric("robust_acc", value / 2, "fgsm", 0.1)],
                       {"value": value}, 1.0)
    with store.session() as s:
        rows = [(r.metric, r.attack, r.eps, r.value) for r in result_rows(s)]
        (rec,) = job_records(s)
    assert rows == [("clean_acc", "", None, 0.75), ("robust_acc", "fgsm", 0.1, 0.375)]
    assert rec.provenance == {"value": 0.75} and rec.metrics[("clean_acc", "", None)] == 0.75
    assert rec.outcomes[("clean_acc", "", None)].tolist() == [True] * 4 + [False] * 4


def test_queries_read_done_jobs_only_and_the_asked_keys_only(tmp_path: Path) -> None:
    """Results of a job that is not done (re-claimed after it finished) are not reported; job_records(keys) filters; failed means failed."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 2, {})
    for key in ("a", "b"):
        store.claim(key, run, FIELDS | {"seed": ord(key)})
        store.complete(key, [Metric("clean_acc", 0.5)], {}, 1.0)
    store.claim("b", run, FIELDS | {"seed": ord("b")})  # rerun: running again, old rows still there
    with store.session() as s:
        assert [r.job_key for r in result_rows(s)] == ["a"]
        assert [r.key for r in job_records(s)] == ["a"]
        assert job_records(s, ["b"]) == [] and [r.key for r in job_records(s, ["a"])] == ["a"]
    store.fail("b", "boom")
    store.add_jobs(run, [("c", FIELDS | {"seed": ord("c")})])  # pending
    with store.session() as s:
        assert [j.key for j in failed_jobs(s)] == ["b"]


def test_a_runs_eta_borrows_only_the_pace_of_earlier_runs_of_its_grid(tmp_path: Path) -> None:
    """A run with nothing finished has no ETA when only a later run of its grid has a pace."""
    from datetime import datetime, timezone

    from harness.store.models import Run
    from harness.store.queries import runs_in_flight

    store = Store(tmp_path / "r.db")
    first, later = store.start_run("g", "g.toml", 6, {}, n_todo=6), store.start_run("g", "g.toml", 6, {}, n_todo=6)
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    with store.session() as s:  # the later run: 4 jobs in 4,000 s
        s.execute(update(Run).where(Run.id == later).values(started_at=start, heartbeat_at=start + timedelta(seconds=4000), n_done=4))
        flight = {r.run_id: r for r in runs_in_flight(s)}
    assert flight[first].eta_s is None


def _record(params: dict[str, Any]) -> JobRecord:
    return JobRecord("k", "d", "a", "p", "p", 0.5, 0, "dk", params, {}, None, None, None, 1, None)


def test_job_record_setups_follow_their_own_parameters() -> None:
    """Pairing keys: fine-tune setup <- fine-tuning; setup <- train, eval, attacks; eval setup <- eval, attacks; protocol default 1."""
    base = {"pruned": {"dense": {"train": {"epochs": 1}}, "sparsity": 0.5, "finetune": {"epochs": 1}}, "eval": {"n": 1}, "attacks": ["fgsm"]}

    def changed(path: tuple[str, ...], value: Any) -> JobRecord:
        p = copy.deepcopy(base)
        node = p
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return _record(p)

    b = _record(base)
    assert b.protocol == 1 and _record(base | {"protocol": 3}).protocol == 3
    assert changed(("pruned", "finetune"), {"epochs": 2}).finetune_setup != b.finetune_setup
    assert changed(("pruned", "sparsity"), 0.25).finetune_setup == b.finetune_setup
    assert changed(("pruned", "dense", "train"), {"epochs": 2}).setup != b.setup
    assert changed(("attacks",), ["pgd"]).setup != b.setup
    assert changed(("attacks",), ["pgd"]).eval_setup != b.eval_setup
    assert changed(("eval",), {"n": 2}).eval_setup != b.eval_setup


# --- the DAG: harness/scheduling/dag.py -------------------------------------------------------------------------------


def _cache(root: Path, stage: str, key: str) -> None:
    (root / stage).mkdir(parents=True, exist_ok=True)
    (root / stage / f"{key}.pt").write_bytes(b"")


def test_fresh_rebuilds_cached_models_and_cached_pruned_models_need_no_dense_task(tmp_path: Path) -> None:
    """--fresh keeps every stage; a cached pruned model drops its task and no eval waits on it; every dep is a task."""
    (none, pruned) = parse_grid(tiny()).jobs
    _cache(tmp_path, "pruned", pruned.pruned_key)
    tasks = build_dag([none, pruned], tmp_path)
    assert sorted(t.stage for t in tasks.values()) == ["dense", "eval", "eval"]
    # The evaluation still reads the dense model (its clean accuracy), so it waits on the dense task, which exists.
    assert tasks[f"eval:{pruned.key}"].deps == tasks[f"eval:{none.key}"].deps == [f"dense:{none.dense_key}"]
    assert all(d in tasks for t in tasks.values() for d in t.deps)
    _cache(tmp_path, "dense", none.dense_key)
    fresh = build_dag([none, pruned], tmp_path, fresh=True)
    assert sorted(t.stage for t in fresh.values()) == ["dense", "eval", "eval", "pruned"]
    assert all(d in fresh for t in fresh.values() for d in t.deps)


def test_a_published_dense_model_is_looked_up_by_its_dense_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the job whose dense key is published skips training."""
    jobs = parse_grid(tiny(seeds=[0, 1])).jobs
    seed0 = next(j for j in jobs if j.seed == 0)
    monkeypatch.setattr(published, "find", lambda key, root=None: object() if key == seed0.dense_key else None)
    dense = [t.job.seed for t in build_dag(jobs, tmp_path).values() if t.stage == "dense"]
    assert dense == [1]


def test_the_control_gets_its_own_fine_tuning_task_and_each_task_its_first_jobs_order(tmp_path: Path) -> None:
    """The fine-tuned dense control is a pruned-stage task; a shared dense task keeps the order of its first job."""
    jobs = parse_grid(tiny(pruners=["none", "dense_finetuned", "l1_filter"])).jobs
    tasks = build_dag(jobs, tmp_path)
    control = next(j for j in jobs if j.pruner.name == "dense_finetuned")
    assert f"pruned:{control.pruned_key}" in tasks
    (dense,) = [t for t in tasks.values() if t.stage == "dense"]
    assert dense.order == 0 and dense.job is jobs[0]


# --- the scheduler: harness/scheduling/scheduler.py ----------------------------------------------------------------


class ScriptedExecutor:
    """An executor that answers each submitted task with the next outcome its script gives (ok by default)."""

    def __init__(self, slots: int = 1, script: Callable[[Task, int], Outcome] | None = None) -> None:
        self.slots, self.script = slots, script
        self.submitted: list[str] = []
        self.running: list[Task] = []
        self.hooks: list[Callable[[], None]] = []
        self.finished: set[str] = set()
        self.early: list[str] = []  # tasks submitted before every task they need had finished

    def start(self) -> None:
        """Nothing to start."""

    def free_slots(self) -> int:
        """Slots not running a task."""
        return self.slots - len(self.running)

    def submit(self, task: Task) -> None:
        """Record the task; it finishes at the next wait."""
        self.submitted.append(task.id)
        self.running.append(task)
        if not set(task.deps) <= self.finished:
            self.early.append(task.id)

    def wait(self, timeout: float) -> list[Outcome]:
        """Run the next hook, then finish every running task by the script."""
        if self.hooks:
            self.hooks.pop(0)()
        out = []
        for task in self.running:
            n = self.submitted.count(task.id)
            out.append(self.script(task, n) if self.script else Outcome(task.id, True, [Metric("clean_acc", 1.0)]))
        self.running = []
        self.finished |= {o.task_id for o in out if o.ok}
        return out

    def cancel(self, task_id: str) -> None:
        """Forget the task."""
        self.running = [t for t in self.running if t.id != task_id]

    def shutdown(self) -> None:
        """Nothing to stop."""


def _scheduler(tmp_path: Path, executor: ScriptedExecutor, policy: Policy, grid: dict[str, Any] | None = None,
               progress: Callable[..., None] | None = None) -> tuple[Scheduler, Store, list[JobSpec]]:
    jobs = parse_grid(grid or tiny()).jobs
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", len(jobs), {})
    store.add_jobs(run, [(j.key, FIELDS | {"seed": i}) for i, j in enumerate(jobs)])
    return Scheduler(build_dag(jobs, tmp_path / "artifacts"), store, run, "me", executor, policy, progress), store, jobs


@pytest.mark.parametrize(("retries", "transient_failures", "done"), [(1, 1, True), (1, 2, False), (2, 2, True), (0, 1, False)])
def test_a_transient_failure_is_retried_exactly_retries_times(tmp_path: Path, retries: int, transient_failures: int, done: bool) -> None:
    """With `retries` = r a task runs at most r + 1 times; while it waits for its retry its job is pending, not ours."""
    states: list[JobStatus | None] = []

    def script(task: Task, n: int) -> Outcome:
        if task.stage == "eval" and n <= transient_failures:
            return Outcome(task.id, False, error="OSError: flaky", transient=True)
        return Outcome(task.id, True, [Metric("clean_acc", 1.0)])

    ex = ScriptedExecutor(script=script)
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=retries, backoff_s=0.0), tiny(pruners=["none"]))
    orig = sched._handle

    def handle(out: Outcome) -> None:
        orig(out)
        if out.transient:
            states.append(store.job_status(jobs[0].key))

    sched._handle = handle  # type: ignore[method-assign]
    tally = sched.run()
    eval_id = f"eval:{jobs[0].key}"
    assert ex.submitted.count(eval_id) == min(transient_failures, retries) + 1
    assert (tally.done, len(tally.failed)) == ((1, 0) if done else (0, 1))
    assert store.job_status(jobs[0].key) is (JobStatus.done if done else JobStatus.failed)
    assert states[: min(transient_failures, retries)] == [JobStatus.pending] * min(transient_failures, retries)


def _dense_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: Policy) -> tuple[list[float], ScriptedExecutor, Scheduler, Store, list[JobSpec]]:
    """A one-job scheduler on a scripted clock, stepped by hand until its dense task has finished."""
    clock = [1000.0]
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: clock[0])
    ex = ScriptedExecutor()
    sched, store, jobs = _scheduler(tmp_path, ex, policy, tiny(pruners=["none"]))
    sched._dispatch()  # dense
    sched._handle(Outcome(ex.running.pop().id, True))
    return clock, ex, sched, store, jobs


def test_the_backoff_doubles_from_backoff_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries wait backoff_s, then 2 x backoff_s, ... after each transient failure."""
    clock, ex, sched, _, _ = _dense_done(tmp_path, monkeypatch, Policy(retries=3, backoff_s=2.0))
    waits = []
    for _ in range(3):
        sched._dispatch()
        task = ex.running.pop()
        sched._handle(Outcome(task.id, False, error="OSError: flaky", transient=True))
        waits.append(sched.not_before[task.id] - clock[0])
        clock[0] = sched.not_before[task.id]
    assert waits == [2.0, 4.0, 8.0]


def test_tasks_are_dispatched_in_priority_order_after_their_dependencies(tmp_path: Path) -> None:
    """One slot: dense first, then each job's stages in grid order; no task before the task it needs."""
    ex = ScriptedExecutor(slots=3)
    sched, _, _ = _scheduler(tmp_path, ex, Policy(retries=0), tiny(pruners=["l1_filter", "none"], sparsities=[0.3, 0.5]))
    sched.run()
    assert ex.early == [] and len(ex.submitted) == len(sched.tasks) == 6
    one = ScriptedExecutor(slots=1)
    sched1, _, _ = _scheduler(tmp_path / "one", one, Policy(retries=0), tiny(pruners=["l1_filter", "none"], sparsities=[0.3, 0.5]))
    sched1.run()
    ranked = [(sched1.tasks[t].stage, sched1.tasks[t].job.pruner.name, sched1.tasks[t].job.sparsity) for t in one.submitted]
    assert ranked[0][0] == "dense" and ranked[1:] == [
        ("eval", "none", 0.0),
        ("pruned", "l1_filter", 0.3), ("eval", "l1_filter", 0.3), ("pruned", "l1_filter", 0.5), ("eval", "l1_filter", 0.5),
    ]


def test_a_failed_stage_fails_its_jobs_and_progress_counts_them(tmp_path: Path) -> None:
    """A pruned stage that fails marks its (never claimed) eval job failed; progress counts failures as finished."""
    events: list[tuple[str, int, int]] = []

    def script(task: Task, n: int) -> Outcome:
        return Outcome(task.id, task.stage != "pruned", error="ValueError: boom")

    ex = ScriptedExecutor(script=script)
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), progress=lambda e, j, k, n: events.append((e, k, n)))
    tally = sched.run()
    pruned = next(j for j in jobs if j.pruner.name == "l1_filter")
    assert store.job_status(pruned.key) is JobStatus.failed and [k for k, _ in tally.failed] == [pruned.key]
    finished = [(e, k, n) for e, k, n in events if e != "start"]
    assert [k for _, k, _ in finished] == [1, 2] and {e for e, _, _ in finished} == {"done", "failed"}


def test_a_late_outcome_after_a_timeout_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task past its time limit is failed; its result arriving afterwards neither stores it nor counts it."""
    clock, ex, sched, store, jobs = _dense_done(tmp_path, monkeypatch, Policy(timeout_s=5.0, retries=0))
    sched._dispatch()  # eval
    task = ex.running.pop()
    clock[0] += 10
    sched._check_timeouts()
    sched._handle(Outcome(task.id, True, [Metric("clean_acc", 1.0)]))
    assert sched.state[task.id] == "failed" and (sched.tally.done, sched.tally.by_others) == (0, 0)
    assert store.job_status(jobs[0].key) is JobStatus.failed


def test_a_job_taken_over_by_another_process_keeps_its_result(tmp_path: Path) -> None:
    """Our result for a job another process took over (we looked dead) is refused: theirs stands."""
    ex = ScriptedExecutor()
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), tiny(pruners=["none"]))

    def take_over() -> None:
        with store.session() as s:
            s.execute(update(Job).values(owner="other"))

    ex.hooks = [lambda: None, take_over]  # dense finishes, then the eval job changes hands while it runs
    tally = sched.run()
    assert (tally.done, tally.by_others) == (0, 1) and store.job_status(jobs[0].key) is JobStatus.running


def test_a_job_another_run_holds_is_awaited_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job a live process runs is not claimed twice; the run waits for it and counts it done by others."""
    monkeypatch.setattr(scheduler_module, "HEARTBEAT_S", 0.0)
    ex = ScriptedExecutor()
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), tiny(pruners=["none"]))
    assert store.try_claim(jobs[0].key, sched.run_id, "other", timedelta(minutes=10))
    finish = [lambda: None, lambda: None, lambda: None,
              lambda: store.complete(jobs[0].key, [Metric("clean_acc", 0.5)], {}, 1.0, owner="other")]
    ex.hooks = list(finish)
    tally = sched.run()
    assert (tally.done, tally.by_others) == (0, 1) and f"eval:{jobs[0].key}" not in ex.submitted
    assert store.job_status(jobs[0].key) is JobStatus.done


def test_an_interrupt_marks_running_jobs_interrupted(tmp_path: Path) -> None:
    """Ctrl-C while a job's evaluation runs leaves it interrupted (rerun to finish), not running or done."""
    ex = ScriptedExecutor()
    sched, store, jobs = _scheduler(tmp_path, ex, Policy(retries=0), tiny(pruners=["none"]))

    def interrupt() -> None:
        raise KeyboardInterrupt

    ex.hooks = [lambda: None, interrupt]
    with pytest.raises(KeyboardInterrupt):
        sched.run()
    assert store.job_status(jobs[0].key) is JobStatus.interrupted
