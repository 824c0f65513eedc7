"""Results store: SQLAlchemy 2.0 models over SQLite, and the queries everything else reads through."""

from harness.store.models import Base, Job, JobStatus, Result, Run
from harness.store.session import Store

__all__ = ["Base", "Job", "JobStatus", "Result", "Run", "Store"]
