"""Read-side queries: everything the CLI and the site show comes through these functions."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.store.models import Job, JobStatus, Result


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


def failed_jobs(s: Session) -> list[Job]:
    """Failed jobs, newest first."""
    return list(s.scalars(select(Job).where(Job.status == JobStatus.failed).order_by(Job.finished_at.desc())))


def result_rows(s: Session) -> list[ResultRow]:
    """Every stored number of every done job, one row per (job, metric)."""
    q = (
        select(Job, Result)
        .join(Result, Result.job_id == Job.id)
        .where(Job.status == JobStatus.done)
        .order_by(Job.dataset, Job.architecture, Job.pruner, Job.sparsity, Job.seed, Result.metric, Result.attack, Result.eps)
    )
    return [
        ResultRow(
            job.key, job.dataset, job.architecture, job.pruner_label, job.sparsity, job.seed,
            r.metric, r.attack, None if r.eps < 0 else r.eps, r.value,
        )
        for job, r in s.execute(q).all()
    ]


@dataclass
class BoardRow:
    """A leaderboard row: one done job with its metrics, and its change against the dense baseline."""

    job_key: str
    pruner: str
    pruner_family: str
    sparsity: float
    seed: int
    clean_acc: float
    robust: dict[tuple[str, float], float] = field(default_factory=dict)
    delta_robust: dict[tuple[str, float], float | None] = field(default_factory=dict)
    delta_clean: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Board:
    """One leaderboard table: a (dataset, architecture) with its attack columns and rows."""

    dataset: str
    architecture: str
    columns: list[tuple[str, float]]
    rows: list[BoardRow]


def leaderboards(s: Session, families: dict[str, str] | None = None) -> list[Board]:
    """One board per (dataset, architecture); rows ranked by worst-case (else first attack) robust accuracy."""
    families = families or {}
    jobs = list(s.scalars(select(Job).where(Job.status == JobStatus.done)))
    by_job: dict[int, list[Result]] = defaultdict(list)
    for r in s.scalars(select(Result).where(Result.job_id.in_([j.id for j in jobs]))):
        by_job[r.job_id].append(r)
    groups: dict[tuple[str, str], list[BoardRow]] = defaultdict(list)
    for job in jobs:
        row = BoardRow(job.key, job.pruner_label, families.get(job.pruner, ""), job.sparsity, job.seed, float("nan"))
        for r in by_job[job.id]:
            if r.metric == "clean_acc":
                row.clean_acc = r.value
            elif r.metric in ("robust_acc", "worst_case_acc"):
                row.robust[(r.attack if r.metric == "robust_acc" else f"worst_{r.attack}", r.eps)] = r.value
            elif not r.attack:
                row.metrics[r.metric] = r.value
        groups[(job.dataset, job.architecture)].append(row)
    boards = []
    for (dataset, arch), rows in sorted(groups.items()):
        baselines = {r.seed: r for r in rows if r.pruner == "none"}
        columns = sorted({c for r in rows for c in r.robust}, key=lambda c: (c[0].startswith("worst_"), c[0], c[1]))
        for r in rows:
            base = baselines.get(r.seed)
            if base is not None:
                r.delta_clean = r.clean_acc - base.clean_acc
                r.delta_robust = {c: (v - base.robust[c]) if c in base.robust else None for c, v in r.robust.items()}
        # Default ranking: mean worst-case robust accuracy over the eps list (area under the robustness
        # curve), then clean accuracy; a single strong eps would tie most naturally trained models at 0.
        rank_cols = [c for c in columns if c[0].startswith("worst_")] or columns
        for r in rows:
            vals = [r.robust[c] for c in rank_cols if c in r.robust]
            r.metrics["rank_score"] = sum(vals) / len(vals) if vals else float("nan")
        rows.sort(key=lambda r: (-_num(r.metrics["rank_score"]), -_num(r.clean_acc), r.pruner, r.sparsity, r.seed))
        boards.append(Board(dataset, arch, columns, rows))
    return boards


def _num(x: float) -> float:
    """NaN sorts last."""
    return float("-inf") if x != x else x
