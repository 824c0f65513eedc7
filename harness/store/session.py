"""Opening the store and the transactional writes of the runner."""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from harness.store.models import SCHEMA_VERSION, Base, Job, JobStatus, Meta, Result, Run, utcnow


@dataclass(frozen=True)
class Metric:
    """A metric value to record."""

    metric: str
    value: float
    attack: str = ""
    eps: float = -1.0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (harness status, site) work while a run writes; the timeout waits out a lock.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _readonly_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Store:
    """A results database; every write is one transaction. `readonly` never changes the file."""

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        if (readonly or not create) and not self.path.exists():
            from harness.errors import HarnessError

            raise HarnessError(f"No results database at {self.path}; run `harness run` first or pass --db PATH.")
        if readonly:
            self.engine: Engine = create_engine(f"sqlite:///file:{self.path.resolve()}?mode=ro&uri=true")
            event.listen(self.engine, "connect", _readonly_pragmas)
            self.sessions = sessionmaker(self.engine, expire_on_commit=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self.session() as s:
            if s.get(Meta, "schema_version") is None:
                s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))

    def close(self) -> None:
        """Close pooled connections (the last one checkpoints the WAL into the main file)."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self.sessions.begin() as s:
            yield s

    def start_run(self, grid: str, grid_path: str, n_jobs: int, environment: dict[str, Any]) -> int:
        """Record a new run; returns its id."""
        with self.session() as s:
            run = Run(grid=grid, grid_path=grid_path, n_jobs=n_jobs, environment=environment)
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, n_done: int, n_failed: int, n_cached: int) -> None:
        """Close a run with its counts."""
        with self.session() as s:
            s.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(finished_at=utcnow(), n_done=n_done, n_failed=n_failed, n_cached=n_cached)
            )

    def done_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are already done."""
        keys = list(keys)
        with self.session() as s:
            return set(s.scalars(select(Job.key).where(Job.key.in_(keys), Job.status == JobStatus.done)))

    def claim(self, key: str, run_id: int, fields: dict[str, Any]) -> None:
        """Mark a job running (creating it if new); done jobs are never reclaimed."""
        now = utcnow()
        with self.session() as s:
            job = s.scalars(select(Job).where(Job.key == key)).one_or_none()
            if job is None:
                job = Job(key=key, **fields)
                s.add(job)
            job.status, job.run_id, job.started_at, job.heartbeat_at = JobStatus.running, run_id, now, now
            job.error, job.finished_at = None, None
            job.attempts = (job.attempts or 0) + 1

    def complete(self, key: str, metrics: list[Metric], provenance: dict[str, Any], duration_s: float) -> None:
        """Store a job's metrics and mark it done, atomically."""
        with self.session() as s:
            job = s.scalars(select(Job).where(Job.key == key)).one()
            s.execute(delete(Result).where(Result.job_id == job.id))
            s.add_all(Result(job_id=job.id, metric=m.metric, attack=m.attack, eps=m.eps, value=float(m.value)) for m in metrics)
            job.status, job.finished_at, job.duration_s, job.provenance = JobStatus.done, utcnow(), duration_s, provenance

    def fail(self, key: str, exc: BaseException) -> None:
        """Mark a job failed with its traceback."""
        text = "".join(traceback.format_exception(exc)).strip()
        with self.session() as s:
            s.execute(update(Job).where(Job.key == key).values(status=JobStatus.failed, error=text, finished_at=utcnow()))

    def reset_stale(self, older_than: timedelta = timedelta(minutes=10)) -> int:
        """Jobs left 'running' by a dead process (no heartbeat for a while) go back to pending."""
        cutoff = utcnow() - older_than
        with self.session() as s:
            res = s.execute(
                update(Job).where(Job.status == JobStatus.running, Job.heartbeat_at < cutoff).values(status=JobStatus.pending)
            )
            return res.rowcount or 0
