"""Read-side queries: job counts, results, done jobs with their outcomes, runs in flight and submissions.

Leaderboards built from the done jobs are in harness.store.boards.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.api.keys import key_of
from harness.api.metrics import unpack_outcomes
from harness.store.models import Job, JobStatus, Outcome, Result, Run, Submission

# (metric, attack, eps) with '' and None for "no attack" and "no eps", as stored rows are read back.
MetricKey = tuple[str, str, float | None]


@dataclass
class ResultRow:
    """One (job, metric) value with the job's identifying fields."""

    job_key: str
    dataset: str
    architecture: str
    pruner: str
    sparsity: float
    seed: int
    metric: str
    attack: str
    eps: float | None
    value: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return self.__dict__.copy()


def status_counts(s: Session) -> dict[str, int]:
    """Number of jobs in each state (all states listed)."""
    counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return {st.value: int(counts.get(st, 0)) for st in JobStatus}


def status_by_grid(s: Session) -> dict[str, dict[str, int]]:
    """Per grid (of the run that queued or last claimed a job), the number of jobs in each state (all states listed)."""
    q = select(Run.grid, Job.status, func.count()).outerjoin(Run, Run.id == Job.run_id).group_by(Run.grid, Job.status)
    out: dict[str, dict[str, int]] = {}
    for grid, status, n in s.execute(q):
        out.setdefault(grid or "", {st.value: 0 for st in JobStatus})[status.value] = int(n)
    return dict(sorted(out.items()))


def failed_jobs(s: Session) -> list[Job]:
    """Failed jobs, newest first."""
    return list(s.scalars(select(Job).where(Job.status == JobStatus.failed).order_by(Job.finished_at.desc())))


def result_rows(s: Session) -> list[ResultRow]:
    """Every stored number of every done job, one row per (job, metric)."""
    q = (
        select(Job.key, Job.dataset, Job.architecture, Job.pruner_label, Job.sparsity, Job.seed, Result.metric, Result.attack, Result.eps, Result.value)
        .join(Result, Result.job_id == Job.id)
        .where(Job.status == JobStatus.done)
        .order_by(Job.dataset, Job.architecture, Job.pruner_label, Job.sparsity, Job.seed, Job.key, Result.metric, Result.attack, Result.eps)
    )
    return [ResultRow(*row[:8], None if row[8] < 0 else row[8], row[9]) for row in s.execute(q)]


@dataclass
class JobRecord:
    """A done job with every metric it recorded, keyed by (metric, attack, eps)."""

    key: str
    dataset: str
    architecture: str
    pruner: str
    pruner_label: str
    sparsity: float
    seed: int
    dense_key: str
    params: dict[str, Any]
    provenance: dict[str, Any]
    duration_s: float | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    run_id: int | None
    grid: str = ""  # the grid of the run that recorded the job
    metrics: dict[MetricKey, float] = field(default_factory=dict)
    # Per-example correctness behind accuracy metrics (same key as `metrics`), for paired tests.
    outcomes: dict[MetricKey, np.ndarray] = field(default_factory=dict)

    @property
    def protocol(self) -> int:
        """Protocol version the job ran under (rows stored before versioning are version 1)."""
        return int(self.params.get("protocol", 1))

    @property
    def finetune_setup(self) -> str:
        """Key of the fine-tuning settings, to pair a pruned job with the control fine-tuned the same way."""
        return key_of(self.params.get("pruned", {}).get("finetune"))

    def get(self, metric: str, attack: str = "", eps: float | None = None) -> float | None:
        """One metric's value, or None when the job did not record it."""
        return self.metrics.get((metric, attack, eps))

    @property
    def setup(self) -> str:
        """Short key of what the job shares with its siblings across seeds and pruners: training, evaluation, attacks."""
        dense = self.params.get("pruned", {}).get("dense", {})
        return key_of({"train": dense.get("train"), "eval": self.params.get("eval"), "attacks": self.params.get("attacks")})[:8]

    @property
    def eval_setup(self) -> str:
        """Key of the evaluation settings alone, to pair a job with the dense baseline evaluated the same way."""
        return key_of({"eval": self.params.get("eval"), "attacks": self.params.get("attacks")})

    def flags(self) -> list[str]:
        """Names of the sanity checks this job raised (metrics `flag_<check>` with value 1)."""
        return sorted(
            m[len("flag_"):] + (f" ({a})" if a else "")
            for (m, a, _e), v in self.metrics.items()
            if m.startswith("flag_") and v >= 0.5
        )


def job_records(s: Session, keys: Iterable[str] | None = None) -> list[JobRecord]:
    """Done jobs (all, or those with the given keys) with their metrics, in a stable order."""
    q = select(
        Job.id, Job.key, Job.dataset, Job.architecture, Job.pruner, Job.pruner_label, Job.sparsity, Job.seed,
        Job.dense_key, Job.params, Job.provenance, Job.duration_s, Job.started_at, Job.finished_at, Job.attempts, Job.run_id, Run.grid,
    ).outerjoin(Run, Run.id == Job.run_id).where(Job.status == JobStatus.done)
    if keys is not None:
        q = q.where(Job.key.in_(list(keys)))
    by_id: dict[int, JobRecord] = {}
    for row in s.execute(q.order_by(Job.dataset, Job.architecture, Job.pruner_label, Job.sparsity, Job.seed, Job.key)):
        record = JobRecord(*row[1:16])  # the grid by assignment: mypy cannot count the fields of a 17-column Row
        record.grid = row[16] or ""
        by_id[row[0]] = record
    # Plain column tuples, not ORM objects: a large store has hundreds of thousands of result rows.
    rq = select(Result.job_id, Result.metric, Result.attack, Result.eps, Result.value)
    if keys is not None:
        rq = rq.where(Result.job_id.in_(list(by_id)))
    for job_id, metric, attack, eps, value in s.execute(rq):
        rec = by_id.get(job_id)
        if rec is not None:
            rec.metrics[(metric, attack, None if eps < 0 else eps)] = value
    oq = select(Outcome.job_id, Outcome.metric, Outcome.attack, Outcome.eps, Outcome.n, Outcome.bits)
    if keys is not None:
        oq = oq.where(Outcome.job_id.in_(list(by_id)))
    for job_id, metric, attack, eps, n, bits in s.execute(oq):
        rec = by_id.get(job_id)
        if rec is not None:
            rec.outcomes[(metric, attack, None if eps < 0 else eps)] = unpack_outcomes(bits, n)
    return list(by_id.values())



@dataclass
class RunProgress:
    """An unfinished run: in flight with its estimated time to finish, or stale when its driver stopped beating."""

    run_id: int
    grid: str
    done: int
    failed: int
    todo: int
    elapsed_s: float
    eta_s: float | None
    stale_s: float | None = None  # seconds since the last heartbeat, when the driver is taken to be gone
    resumed_by: int | None = None  # the latest run of the same grid, when it came after this stale one


def driver_gone(driver: str | None) -> bool:
    """Whether a process named host:pid ran on this host and no longer exists (a driver, or a job's owner)."""
    host, _, pid = (driver or "").partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def runs_in_flight(s: Session, stale_after_s: float = 60.0) -> list[RunProgress]:
    """Unfinished runs, with an ETA from their pace so far; stale when no heartbeat came for `stale_after_s`
    or when their driver process on this host is gone (SIGKILL, power loss), and then resumed by any later run of
    the same grid."""
    from datetime import datetime, timezone

    from harness.store.models import Run

    def utc(t: datetime) -> datetime:
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)

    now = datetime.now(timezone.utc)
    runs_of_grid: dict[str, list[int]] = {}
    # (run id, wall seconds, jobs finished) of every run that finished a job: the pace a new run of its grid can expect.
    paces: dict[str, list[tuple[int, float, int]]] = {}
    for run_id, grid, start, beat, end, done, failed in s.execute(
            select(Run.id, Run.grid, Run.started_at, Run.heartbeat_at, Run.finished_at, Run.n_done, Run.n_failed).order_by(Run.id)):
        runs_of_grid.setdefault(grid, []).append(run_id)
        last = end or beat
        if start is not None and last is not None and done + failed:
            paces.setdefault(grid, []).append((run_id, (utc(last) - utc(start)).total_seconds(), done + failed))
    out = []
    for run in s.scalars(select(Run).where(Run.finished_at.is_(None)).order_by(Run.id)):
        beat, start = run.heartbeat_at, run.started_at
        if beat is None or start is None:
            continue
        beat, start = utc(beat), utc(start)
        silent = (now - beat).total_seconds()
        elapsed = (now - start).total_seconds()
        finished = run.n_done + run.n_failed
        eta = elapsed / finished * max(run.n_todo - finished, 0) if finished else None
        earlier = [(wall, n) for i, wall, n in paces.get(run.grid, []) if i < run.id]
        if eta is None and earlier:
            # A resumed study's jobs take an hour each: rather than no estimate for that hour, the pace of the grid's
            # earlier runs (wall seconds per finished job, with the workers they had), less what this run has spent.
            eta = max(sum(w for w, _ in earlier) / sum(n for _, n in earlier) * run.n_todo - elapsed, 0.0)
        stale = silent if silent > stale_after_s or driver_gone(run.driver) else None
        # A rerun of the same grid re-queues and reruns a cut-short run's unfinished jobs, so that run needs nothing more.
        resumed_by = runs_of_grid[run.grid][-1] if stale is not None and runs_of_grid[run.grid][-1] > run.id else None
        out.append(RunProgress(run.id, run.grid, run.n_done, run.n_failed, run.n_todo, elapsed, eta, stale, resumed_by))
    return out


@dataclass
class SubmissionRecord:
    """A pruner submitted against this database: who, what, and the sha256 of the exact file checked."""

    name: str
    sha256: str
    author: str
    description: str
    paper: str
    url: str
    family: str
    class_name: str
    original_filename: str
    harness_version: str
    git_commit: str | None
    submitted_at: datetime
    report: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return self.__dict__ | {"submitted_at": self.submitted_at.isoformat(timespec="seconds")}


def submission_records(s: Session) -> list[SubmissionRecord]:
    """Every submission recorded in this database, oldest first (without the file's bytes)."""
    fields = [f for f in SubmissionRecord.__dataclass_fields__]
    cols = [getattr(Submission, f) for f in fields]
    return [SubmissionRecord(*row) for row in s.execute(select(*cols).order_by(Submission.submitted_at, Submission.name))]


def submission_source(s: Session, name: str) -> bytes | None:
    """The recorded bytes of submission `name`, or None."""
    return s.scalars(select(Submission.source).where(Submission.name == name)).one_or_none()
