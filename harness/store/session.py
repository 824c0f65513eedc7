"""Opening the store and the transactional writes of the runner."""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, delete, event, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, CursorResult, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from harness.api.errors import HarnessError
from harness.api.metrics import Metric
from harness.store.models import (
    Base,
    Job,
    JobStatus,
    Meta,
    Outcome,
    Result,
    Run,
    Submission,
    utcnow,
)
from harness.store.queries import driver_gone
from harness.store.schema import SCHEMA_VERSION, check_current, file_uri, wait_for_first_page


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (harness status, site) work while a run writes; the timeout waits out a lock.
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL still never corrupts the DB or loses a commit on a process crash; it only skips an
    # fsync per commit (a power cut may drop the last commits), which makes each write several times cheaper.
    cur.execute("PRAGMA synchronous=NORMAL")
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
            raise HarnessError(f"No results database at {self.path}; run `harness run` first or pass --db PATH.")
        if self.path.exists():
            wait_for_first_page(self.path)
            # Before SQLAlchemy or WAL touch it: a foreign, empty, corrupt or other-version file is refused unchanged.
            check_current(self.path, allow_blank=not readonly)
        if readonly:
            # A URL object, not a string: a '#', '?' or '%' in a folder name would otherwise cut or bend the path.
            url = URL.create("sqlite", database=file_uri(self.path), query={"mode": "ro", "uri": "true"})
            self.engine: Engine = create_engine(url)
            event.listen(self.engine, "connect", _readonly_pragmas)
            self.sessions = sessionmaker(self.engine, expire_on_commit=False)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"cannot create the results database {self.path}: {exc.strerror or exc}; pass --db PATH in a folder you can write.") from None
        self.engine = create_engine(URL.create("sqlite", database=str(self.path)))  # the path as given, never parsed
        event.listen(self.engine, "connect", _sqlite_pragmas)
        # A concurrent writer may see the tables before the version row; probe(allow_blank=True) accepts that state.
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    Base.metadata.create_all(conn)
                    conn.execute(sqlite_insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)).on_conflict_do_nothing())
                break
            except OperationalError as exc:
                # Two runs creating one new file: both saw no table, the other created it first. Check again.
                if "already exists" in str(exc) and attempt < 4:
                    time.sleep(0.1)
                    continue
                self.engine.dispose()
                if not any(why in str(exc) for why in ("unable to open", "readonly", "read-only")):
                    raise
                raise HarnessError(f"cannot write the results database {self.path} ({exc.orig}); pass --db PATH in a folder you can write.") from None
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        """Close pooled connections (the last one checkpoints the WAL into the main file)."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self.sessions.begin() as s:
            yield s

    def start_run(self, grid: str, grid_path: str, n_jobs: int, environment: dict[str, Any], n_todo: int = 0) -> int:
        """Record a new run, driven by this process; returns its id."""
        with self.session() as s:
            run = Run(grid=grid, grid_path=grid_path, n_jobs=n_jobs, n_todo=n_todo, environment=environment, heartbeat_at=utcnow(),
                      driver=f"{socket.gethostname()}:{os.getpid()}")
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, n_done: int, n_failed: int, n_cached: int, ended: str = "finished") -> None:
        """Close a run with its counts and how it ended ("finished", "interrupted (SIGTERM)", ...)."""
        with self.session() as s:
            s.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(finished_at=utcnow(), n_done=n_done, n_failed=n_failed, n_cached=n_cached, ended=ended)
            )

    def done_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are already done."""
        keys = list(keys)
        with self.session() as s:
            return set(s.scalars(select(Job.key).where(Job.key.in_(keys), Job.status == JobStatus.done)))

    def job_status(self, key: str) -> JobStatus | None:
        """Current state of a job, or None if unknown."""
        with self.session() as s:
            return s.scalars(select(Job.status).where(Job.key == key)).one_or_none()

    def add_jobs(self, run_id: int, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Create the rows of jobs not seen before, as pending."""
        with self.session() as s:
            known = set(s.scalars(select(Job.key).where(Job.key.in_([k for k, _ in rows]))))
            s.add_all(Job(key=k, run_id=run_id, status=JobStatus.pending, **f) for k, f in rows if k not in known)

    def requeue(self, keys: Iterable[str]) -> int:
        """Mark the done jobs among `keys` pending again (`--fresh`); their results stay until new ones replace them."""
        keys = list(keys)
        with self.session() as s:
            res = cast("CursorResult[Any]", s.execute(
                update(Job).where(Job.key.in_(keys), Job.status == JobStatus.done).values(status=JobStatus.pending)
            ))
            return res.rowcount

    def try_claim(self, key: str, run_id: int, owner: str, stale_after: timedelta) -> bool:
        """Atomically take a job that is not done and not being run by a live process; True if taken."""
        now = utcnow()
        with self.session() as s:
            job = s.scalars(select(Job).where(Job.key == key)).one_or_none()
            if job is None or job.status is JobStatus.done:
                return False
            if job.status is JobStatus.running and not _abandoned(job, now, stale_after):
                return False
            # Compare-and-swap on the state we read: SQLite serialises writers, so only one claimant wins.
            res = cast("CursorResult[Any]", s.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts)
                .values(status=JobStatus.running, run_id=run_id, owner=owner, started_at=now, heartbeat_at=now,
                        error=None, finished_at=None, attempts=job.attempts + 1)
            ))
            return res.rowcount == 1

    def claim(self, key: str, run_id: int, fields: dict[str, Any], owner: str = "") -> None:
        """Create-or-take a job unconditionally (single-process use and tests)."""
        self.add_jobs(run_id, [(key, fields)])
        now = utcnow()
        with self.session() as s:
            job = s.scalars(select(Job).where(Job.key == key)).one()
            job.status, job.run_id, job.started_at, job.heartbeat_at, job.owner = JobStatus.running, run_id, now, now, owner
            job.error, job.finished_at = None, None
            job.attempts = (job.attempts or 0) + 1

    def heartbeat(self, keys: Iterable[str], owner: str, run_id: int | None = None, n_done: int | None = None, n_failed: int | None = None) -> None:
        """Refresh the heartbeat of our running jobs (and the run's progress counters)."""
        now = utcnow()
        with self.session() as s:
            s.execute(update(Job).where(Job.key.in_(list(keys)), Job.owner == owner, Job.status == JobStatus.running).values(heartbeat_at=now))
            if run_id is not None:
                values: dict[str, Any] = {"heartbeat_at": now}
                if n_done is not None:
                    values["n_done"] = n_done
                if n_failed is not None:
                    values["n_failed"] = n_failed
                s.execute(update(Run).where(Run.id == run_id).values(**values))

    def complete(self, key: str, metrics: list[Metric], provenance: dict[str, Any], duration_s: float, owner: str | None = None) -> bool:
        """Store a job's metrics and mark it done, atomically; refused (False) if another process took the job over."""
        with self.session() as s:
            job = s.scalars(select(Job).where(Job.key == key)).one()
            if owner is not None and (job.owner != owner or job.status is not JobStatus.running):
                return False
            s.execute(delete(Result).where(Result.job_id == job.id))
            s.add_all(Result(job_id=job.id, metric=m.metric, attack=m.attack, eps=m.eps, value=float(m.value)) for m in metrics)
            s.execute(delete(Outcome).where(Outcome.job_id == job.id))
            s.add_all(Outcome(job_id=job.id, metric=m.metric, attack=m.attack, eps=m.eps, n=m.n_examples, bits=m.outcomes) for m in metrics if m.outcomes is not None)
            job.status, job.finished_at, job.duration_s, job.provenance = JobStatus.done, utcnow(), duration_s, provenance
            job.heartbeat_at = job.finished_at
            return True

    def fail(self, key: str, exc: BaseException | str, owner: str | None = None, status: JobStatus = JobStatus.failed) -> None:
        """Mark a job failed (or interrupted) with its traceback or reason."""
        text = exc if isinstance(exc, str) else "".join(traceback.format_exception(exc)).strip()
        cond = [Job.key == key, Job.status != JobStatus.done]
        if owner is not None:
            # Our own claim, or a job nobody is running (a dependency of it failed before it was claimed).
            cond.append(or_(Job.owner == owner, Job.status != JobStatus.running))
        with self.session() as s:
            s.execute(update(Job).where(*cond).values(status=status, error=text, finished_at=utcnow()))

    def record_submission(self, fields: dict[str, Any], replace: bool = False) -> None:
        """Insert a submission row, or with `replace` overwrite the row of the same name, in one transaction.

        The caller checked name and sha256 beforehand; the UNIQUE constraints turn a race with another submit
        into HarnessError rather than a second row.
        """
        from sqlalchemy.exc import IntegrityError

        try:
            with self.session() as s:
                if replace:
                    s.execute(delete(Submission).where(Submission.name == fields["name"]))
                s.add(Submission(**fields))
        except IntegrityError:
            raise HarnessError(f"{self.path}: another submission with the name {fields['name']!r} or the same file was recorded meanwhile; submit again.") from None

    def reset_stale(self, older_than: timedelta = timedelta(minutes=10)) -> int:
        """Jobs left 'running' by a dead process go back to pending; returns how many."""
        now = utcnow()
        n = 0
        with self.session() as s:
            for job in s.scalars(select(Job).where(Job.status == JobStatus.running)):
                if _abandoned(job, now, older_than):
                    job.status = JobStatus.pending
                    n += 1
        return n


def _abandoned(job: Job, now: datetime, stale_after: timedelta) -> bool:
    """A running job whose heartbeat is old, or whose owner process on this host is gone."""
    beat = job.heartbeat_at
    if beat is not None and beat.tzinfo is None:  # SQLite hands datetimes back naive; they are UTC
        beat = beat.replace(tzinfo=timezone.utc)
    if beat is None or now - beat > stale_after:
        return True
    host, _, rest = (job.owner or "").partition(":")
    return driver_gone(f"{host}:{rest.split(':', 1)[0]}")


def owner_id(run_id: int) -> str:
    """host:pid:run of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{run_id}"
