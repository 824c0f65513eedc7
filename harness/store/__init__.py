"""Results store: SQLAlchemy 2.0 models over SQLite, the queries and leaderboards everything else reads through, their statistics."""

from harness.store.models import Base, Job, JobStatus, Result, Run
from harness.store.session import Store

__all__ = ["Base", "Job", "JobStatus", "Result", "Run", "Store"]
