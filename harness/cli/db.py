"""The `harness db` commands: schema version of a results database, its explicit upgrade, and scrubbing it for publication."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.api.errors import HarnessError

db_app = typer.Typer(help="Results-database maintenance: schema version, upgrade, and scrubbing machine paths before publishing.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@db_app.command()
def upgrade(db: Annotated[Path, typer.Option("--db", help="Results database (SQLite).")] = Path("results.db")) -> None:
    """Migrate a database written by an older harness to this harness's schema, after copying it to a backup."""
    from harness.store.schema import upgrade as do_upgrade

    try:
        before, after, backup = do_upgrade(db)
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if backup is None:
        console.print(f"{db} is already at schema version {after}; nothing to do.", highlight=False)
    else:
        console.print(f"upgraded {db} from schema version {before} to {after}; the old file is kept as {backup}", highlight=False, soft_wrap=True)


@db_app.command()
def version(db: Annotated[Path, typer.Option("--db", help="Results database (SQLite).")] = Path("results.db")) -> None:
    """Print the schema version of a database and the one this harness uses."""
    from harness.store.schema import SCHEMA_VERSION, DatabaseFileError, probe

    if not db.exists():
        err.print(f"[bold red]error:[/] No results database at {db}; pass --db PATH.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    try:
        v = probe(db)
    except DatabaseFileError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    note = "current" if v == SCHEMA_VERSION else f"run `harness db upgrade --db {db}`"
    console.print(f"{db}: schema version {v}; this harness uses {SCHEMA_VERSION} ({note})", highlight=False)


@db_app.command()
def scrub(db: Annotated[Path, typer.Option("--db", help="Results database (SQLite).")] = Path("results.db")) -> None:
    """Replace the building machine's paths in a database (provenance, runs, errors) before publishing it."""
    from sqlalchemy import select

    from harness.site.public import scrub as clean
    from harness.site.public import scrub_text
    from harness.store.models import Job, Run, Submission
    from harness.store.session import Store

    try:
        store = Store(db, create=False)
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    changed = 0
    # Keys and parameters stay as they are: they define the jobs. Only what describes the machine is rewritten.
    with store.session() as s:
        for job in s.scalars(select(Job)):
            prov, error = clean(job.provenance), scrub_text(job.error) if job.error else job.error
            if (prov, error) != (job.provenance, job.error):
                job.provenance, job.error, changed = prov, error, changed + 1
        for run in s.scalars(select(Run)):
            path, env = scrub_text(run.grid_path), clean(run.environment)
            if (path, env) != (run.grid_path, run.environment):
                run.grid_path, run.environment, changed = path, env, changed + 1
        for sub in s.scalars(select(Submission)):
            report = clean(sub.report)
            if report != sub.report:
                sub.report, changed = report, changed + 1
    store.close()
    console.print(f"{db}: machine paths replaced in {changed} rows", highlight=False)


@db_app.command("forget-pending")
def forget_pending(
    run: Annotated[int, typer.Option("--run", help="The run (its id in the database's runs table) whose never-started jobs to forget.")],
    db: Annotated[Path, typer.Option("--db", help="Results database (SQLite).")] = Path("results.db"),
) -> None:
    """Forget the jobs a run queued but never started, such as those of a grid whose settings changed since."""
    from sqlalchemy import delete, exists, select

    from harness.store.models import Job, JobStatus, Outcome, Result, Run
    from harness.store.session import Store

    try:
        store = Store(db, create=False)
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    with store.session() as s:
        if s.get(Run, run) is None:
            store.close()
            err.print(f"[bold red]error:[/] {db} has no run {run}; pass the id of a run in its runs table.", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        # Only jobs nobody ever claimed, with nothing stored: a job that started keeps its history.
        never = select(Job.id).where(
            Job.run_id == run, Job.status == JobStatus.pending, Job.started_at.is_(None), Job.attempts == 0,
            ~exists().where(Result.job_id == Job.id), ~exists().where(Outcome.job_id == Job.id),
        )
        ids = list(s.scalars(never))
        if ids:
            s.execute(delete(Job).where(Job.id.in_(ids)))
    store.close()
    console.print(f"{db}: forgot {len(ids)} never-started jobs of run {run}", highlight=False, soft_wrap=True)


@db_app.command()
def compare(
    key_a: Annotated[str, typer.Argument(help="Key (or a unique start of it) of job A.")],
    key_b: Annotated[str, typer.Argument(help="Key (or a unique start of it) of job B, the reference.")],
    db: Annotated[Path, typer.Option("--db", help="Results database holding job A (and B, without --db-b).")] = Path("results.db"),
    db_b: Annotated[Path | None, typer.Option("--db-b", help="Results database holding job B, when it is another file.")] = None,
) -> None:
    """Compare two done jobs on the images both attacked: each accuracy, A's change against B, exact McNemar p."""
    from harness.site.formatting import eps, pct, signed_pct
    from harness.store.compare import compare_jobs, find_job
    from harness.store.session import Store

    try:
        jobs = []
        for key, path in ((key_a, db), (key_b, db_b or db)):
            store = Store(path, readonly=True)
            try:
                with store.session() as s:
                    jobs.append(find_job(s, key))
            finally:
                store.close()
        rows, skipped = compare_jobs(*jobs)
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    a, b = jobs
    for name, j in (("A", a), ("B", b)):
        console.print(f"{name}: {j.key} {j.dataset}/{j.architecture}/{j.pruner_label}@{j.sparsity:g} seed {j.seed}", highlight=False)
    table = Table("metric", "attack", "eps", "A %", "B %", "A - B (95 % CI)", "p", "A/B only", box=None)
    for r in rows:
        (metric, attack, e), t = r.metric, r.test
        lo, hi = t.interval() or (None, None)
        table.add_row(metric, attack or "-", eps(e) or "-", pct(r.a), pct(r.b), f"{signed_pct(t.delta)} ({signed_pct(lo)} to {signed_pct(hi)})",
                      f"{t.p_value:.2g}", f"{t.gained} / {t.lost}")
    # Piped, rich assumes 80 columns and wraps rows; scripts reading the table need one line per row.
    (console if console.is_terminal else Console(width=160)).print(table)
    for (metric, _, e), at_a, at_b in skipped:
        console.print(f"not compared: {metric} at {eps(e)}, a worst case over other attacks (A: {', '.join(at_a)}; B: {', '.join(at_b)})",
                      highlight=False, soft_wrap=True)
    # One pair of trained models: the test speaks for image sampling, not for training variation across seeds.
    console.print(f"{rows[0].test.n_pairs} paired images. CI: Tango's score interval, points; p: exact McNemar; A/B only: images only A, or only B, "
                  "gets right. One model each, so p and the CI speak for the images, not for training seeds.", highlight=False, soft_wrap=True)
