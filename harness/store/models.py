"""Tables: runs of a grid, jobs keyed by their parameters, one result row per (job, metric), submitted plugins."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Timezone-aware now."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the results schema."""

    type_annotation_map = {dict[str, Any]: JSON}


class JobStatus(str, enum.Enum):
    """Life cycle of a job."""

    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    interrupted = "interrupted"


class Meta(Base):
    """Key-value facts about the database itself (schema version)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Run(Base):
    """One invocation of `harness run` on a grid, with the environment it ran in."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    grid: Mapped[str] = mapped_column(String(256))
    grid_path: Mapped[str] = mapped_column(String(1024))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    n_jobs: Mapped[int] = mapped_column(Integer, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_cached: Mapped[int] = mapped_column(Integer, default=0)
    n_todo: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # host:pid of the driver, so `harness status` on the same host tells a vanished driver at once (schema v2).
    driver: Mapped[Optional[str]] = mapped_column(String(256))
    # How the run ended: "finished", or "interrupted (SIGTERM)" and the like; NULL while it runs (schema v2).
    ended: Mapped[Optional[str]] = mapped_column(String(64))


class Job(Base):
    """A (dataset, architecture, seed, pruner, sparsity, attacks) evaluation, unique by its key."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_lookup", "dataset", "architecture", "pruner", "sparsity"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[Optional[int]] = mapped_column(ForeignKey("runs.id"))
    dataset: Mapped[str] = mapped_column(String(128))
    architecture: Mapped[str] = mapped_column(String(128))
    pruner: Mapped[str] = mapped_column(String(128))
    pruner_label: Mapped[str] = mapped_column(String(256))
    sparsity: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    dense_key: Mapped[str] = mapped_column(String(64))
    pruned_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus), default=JobStatus.pending)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[Optional[str]] = mapped_column(Text)
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    # host:pid of the process running the job, so a rerun on the same host can tell a dead owner at once.
    owner: Mapped[Optional[str]] = mapped_column(String(256))
    duration_s: Mapped[Optional[float]] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    results: Mapped[list[Result]] = relationship(back_populates="job", cascade="all, delete-orphan")


class Result(Base):
    """One number: a metric of a job, optionally for an attack and eps."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("job_id", "metric", "attack", "eps", name="uq_result"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(64))
    # SQL UNIQUE treats NULLs as distinct, so "no attack" is stored as '' and "no eps" as -1.
    attack: Mapped[str] = mapped_column(String(64), default="")
    eps: Mapped[float] = mapped_column(Float, default=-1.0)
    value: Mapped[float] = mapped_column(Float)
    job: Mapped[Job] = relationship(back_populates="results")


class Submission(Base):
    """A pruner file submitted against this database: its exact bytes, their sha256 and what the check reported (schema v2)."""

    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[bytes] = mapped_column(LargeBinary)
    original_filename: Mapped[str] = mapped_column(String(256))
    author: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text)
    paper: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(Text, default="")
    family: Mapped[str] = mapped_column(String(32))
    class_name: Mapped[str] = mapped_column(String(256))
    harness_version: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[Optional[str]] = mapped_column(String(64))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Outcome(Base):
    """Per-example correctness behind one accuracy Result (packed bits), so comparisons can be paired by example."""

    __tablename__ = "outcomes"
    __table_args__ = (UniqueConstraint("job_id", "metric", "attack", "eps", name="uq_outcome"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(64))
    attack: Mapped[str] = mapped_column(String(64), default="")
    eps: Mapped[float] = mapped_column(Float, default=-1.0)
    n: Mapped[int] = mapped_column(Integer)
    bits: Mapped[bytes] = mapped_column(LargeBinary)
