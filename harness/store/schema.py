"""Schema versions: what a database file is, checked before anything opens it, and ordered additive migrations."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from harness.api.errors import HarnessError

SQLITE_MAGIC = b"SQLite format 3\x00"
# Tables every harness database has had since version 1; a SQLite file without them belongs to another program.
CORE_TABLES = {"meta", "runs", "jobs", "results"}


@dataclass(frozen=True)
class Migration:
    """One additive step from `version - 1` to `version`: SQL statements, and tables created from the models."""

    version: int
    description: str
    sql: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()


# Version 1 is the schema the first harness wrote. Add a step with the next version number at the end; never edit
# or reorder a step that shipped (databases in the wild have applied it).
MIGRATIONS: list[Migration] = [
    Migration(2, "runs.driver, runs.ended: which process drives a run and how it ended; submissions table",
              sql=("ALTER TABLE runs ADD COLUMN driver VARCHAR(256)", "ALTER TABLE runs ADD COLUMN ended VARCHAR(64)"),
              tables=("submissions",)),
    Migration(3, "outcomes: per-example correctness behind each accuracy, for paired tests", tables=("outcomes",)),
]
SCHEMA_VERSION = 1 + len(MIGRATIONS)


class DatabaseFileError(HarnessError):
    """A --db file that is not a usable harness database (empty, foreign, corrupt, other schema version)."""

    exit_code = 2


def file_uri(path: Path) -> str:
    """`path` as an SQLite `file:` URI without a query: percent-quoted, so '#', '?' or '%' in a name stay in the path."""
    return f"file:{quote(str(path.resolve()))}"


def _connect_ro(path: Path) -> sqlite3.Connection:
    """Read-only connection that creates no -wal/-shm file and writes nothing.

    `immutable` reads the main file without locks, which is safe only when no writer has the file open; a WAL
    writer always keeps a -wal file, so where one exists the ordinary read-only mode (and its locks) is used.
    """
    wal = Path(f"{path}-wal").exists()
    uri = f"{file_uri(path)}?{'mode=ro' if wal else 'immutable=1'}"
    return sqlite3.connect(uri, uri=True)


def probe(path: str | Path, allow_blank: bool = False) -> int:
    """The schema version of the harness database at `path`; DatabaseFileError naming the file and the problem otherwise.

    `allow_blank`: an SQLite file without any table yet (another `harness run` creating it this instant) is 0.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(100)
    except IsADirectoryError:
        raise DatabaseFileError(f"{path} is a folder, not a results database; pass a file with --db.") from None
    except OSError as exc:
        raise DatabaseFileError(f"{path}: cannot read it ({exc.strerror}).") from None
    if size == 0:
        raise DatabaseFileError(f"{path} is empty (0 bytes), not a harness results database; pass the right --db, or delete the file to start a new one.")
    if not head.startswith(SQLITE_MAGIC):
        raise DatabaseFileError(f"{path} is not an SQLite database (it starts with {head[:16]!r}); pass the harness results database with --db.")
    if len(head) < 100 or size % 512:
        raise DatabaseFileError(f"{path} is a corrupt SQLite database (truncated to {size} bytes); restore it from a backup.")
    try:
        con = _connect_ro(path)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            check = con.execute("PRAGMA quick_check").fetchone()[0]
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables else None
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseFileError(f"{path} is a corrupt SQLite database ({exc}); restore it from a backup.") from None
    if check != "ok":
        report = "; ".join(line.strip() for line in str(check).splitlines() if line.strip())  # SQLite reports over several lines
        raise DatabaseFileError(f"{path} is a corrupt SQLite database (integrity check: {report}); restore it from a backup.")
    if allow_blank and row is None and tables <= CORE_TABLES | {"submissions"}:
        return 0  # no table, or some without the version row yet: a harness creating it right now
    if not CORE_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:8]) or "none"
        raise DatabaseFileError(f"{path} is an SQLite database of another program (its tables: {shown}), not a harness results database; pass the right --db.")
    if row is None or not str(row[0]).isdigit():
        raise DatabaseFileError(f"{path} has no schema version in its meta table; it was not written by the harness, or is damaged.")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise DatabaseFileError(
            f"{path} was written by a newer harness (schema version {version}; this harness reads up to {SCHEMA_VERSION}); "
            "upgrade the harness to read it. Nothing was changed."
        )
    return version


def check_current(path: str | Path, allow_blank: bool = False) -> None:
    """Refuse a database that is not a current harness database (older ones name the upgrade command)."""
    version = probe(path, allow_blank)
    if version == 0:
        return
    if version < SCHEMA_VERSION:
        raise DatabaseFileError(
            f"{path} has schema version {version}; this harness uses {SCHEMA_VERSION}. "
            f"Run `harness db upgrade --db {path}` (it copies the file to a backup first). Nothing was changed."
        )


def wait_for_first_page(path: Path) -> None:
    """Give a file a concurrent `harness run` has just created a moment for SQLite to write its first page."""
    for _ in range(20):
        if path.stat().st_size > 0:
            return
        time.sleep(0.1)


def check_run_target(path: str | Path) -> None:
    """check_current for the --db a run is about to write: a file another run is creating right now is accepted.

    Two runs started together on a new --db: the first creates the file and its tables one by one, and the second
    must not take that half-made file for another program's database.
    """
    wait_for_first_page(Path(path))
    check_current(path, allow_blank=True)


def backup_path(path: Path, version: int) -> Path:
    """A free name beside `path` for the copy kept before an upgrade."""
    base = path.with_name(f"{path.name}.v{version}.bak")
    out, n = base, 1
    while out.exists():
        out, n = base.with_name(f"{base.name}.{n}"), n + 1
    return out


def upgrade(path: str | Path) -> tuple[int, int, Path | None]:
    """Apply the pending migrations in one transaction after copying the file; returns (from, to, backup or None)."""
    from harness.store.models import Base

    path = Path(path)
    if not path.exists():
        raise DatabaseFileError(f"No results database at {path}; nothing to upgrade.")
    version = probe(path)
    if version == SCHEMA_VERSION:
        return version, version, None
    backup = backup_path(path, version)
    # SQLite's backup API copies a consistent snapshot, commits still in the -wal file included.
    src, dst = sqlite3.connect(path, timeout=30), sqlite3.connect(backup)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        con.execute("BEGIN IMMEDIATE")
        version = int(con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            for stmt in step.sql:
                con.execute(stmt)
            for name in step.tables:
                ddl = str(_create_ddl(Base.metadata.tables[name]))
                con.execute(ddl)
                for index in Base.metadata.tables[name].indexes:
                    con.execute(str(_index_ddl(index)))
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return version, SCHEMA_VERSION, backup


def _create_ddl(table: object) -> object:
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateTable

    return CreateTable(table).compile(dialect=sqlite.dialect())  # type: ignore[arg-type]


def _index_ddl(index: object) -> object:
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex

    return CreateIndex(index).compile(dialect=sqlite.dialect())  # type: ignore[arg-type]
