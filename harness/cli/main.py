"""The `harness` command line: a thin layer over the library that turns HarnessError into exit codes."""

from __future__ import annotations

import csv
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from harness.api.errors import HarnessError
from harness.api.files import atomic_write_text

if TYPE_CHECKING:
    from harness.api.config import JobSpec

console = Console()
err = Console(stderr=True)
# click's UsageError (typer re-exports click, or since 0.2x vendors it): the base of typer.BadParameter either way.
UsageError: type[Exception] = typer.BadParameter.__bases__[0]


def _usage_error(exc: Exception) -> NoReturn:
    """A usage error (an option value of the wrong type, an unknown command) as one line on stderr, exit code 2."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `harness` or `harness db` alone: the help, as before
        raise exc
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "harness"
    message = str(exc.format_message()).rstrip(".")  # type: ignore[attr-defined]
    err.print(f"[bold red]error:[/] {escape(message)}; see `{escape(where)} --help`.", highlight=False, soft_wrap=True)
    raise typer.Exit(getattr(exc, "exit_code", 2))


class OneLineUsage(TyperGroup):
    """The `harness` command group, whose usage errors take one line instead of typer's usage box."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        """Parse the group's own options; a usage error is one line."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand (parsing its options); a usage error is one line."""
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _usage_error(exc)


app = typer.Typer(help="Benchmark how pruning changes the adversarial robustness of CNNs.", no_args_is_help=True, add_completion=False, cls=OneLineUsage)


class Kind(str, Enum):
    """What `harness list` can list."""

    pruners = "pruners"
    architectures = "architectures"
    attacks = "attacks"
    datasets = "datasets"
    grids = "grids"


class Format(str, Enum):
    """Output formats of `harness results`."""

    table = "table"
    csv = "csv"
    json = "json"


def _fail(exc: HarnessError) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # "[train]" is text, not markup
    raise typer.Exit(exc.exit_code)


DbOpt = Annotated[Path, typer.Option("--db", help="Results database (SQLite).")]
# A user's own runs go to a git-ignored folder; the published leaderboard is built with --db results.db --site-dir site.
DEFAULT_DB, DEFAULT_SITE = Path(".harness/results.db"), Path(".harness/site")


@app.command()
def run(
    grid: Annotated[str, typer.Option(help="Built-in grid name or path to a .toml grid.")] = "smoke",
    db: DbOpt = DEFAULT_DB,
    site_dir: Annotated[Path, typer.Option(help="Where to render the leaderboard.")] = DEFAULT_SITE,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder holding dataset files (e.g. CIFAR-10).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Checkpoint and dataset cache (default: .harness beside the DB).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Recompute everything: retrain, and rerun finished jobs (their results are replaced as each finishes).")] = False,
    workers: Annotated[int, typer.Option(help="Worker processes: on the CPU, or per GPU with --device cuda (0 = run in this process).")] = 1,
    devices: Annotated[Optional[str], typer.Option(help="GPUs to use, e.g. 0,2 (default: all visible with --device cuda).")] = None,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Per-task time limit in seconds.")] = None,
    retries: Annotated[int, typer.Option(help="Retries of a task after a transient failure (worker crash, OOM).")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the grid and say what a run would compute; run and write nothing.")] = False,
) -> None:
    """Run a grid: train, prune, fine-tune, attack; store results and render the site."""
    from harness.scheduling.runner import RunOptions
    from harness.scheduling.runner import run as run_grid
    from harness.scheduling.signals import signame, stop_signals_interrupt
    from harness.store.schema import check_run_target

    try:
        device_ids = [int(d) for d in devices.split(",")] if devices else None
    except ValueError:
        _fail(HarnessError(f"--devices {devices!r} must be comma-separated GPU indices, e.g. 0,2."))
    opts = RunOptions(
        grid=grid, db=db, site_dir=site_dir, device=device, devices=device_ids, workers=workers, executor=executor,
        address=address, data_dir=data_dir, cache_dir=cache_dir, fresh=fresh, timeout_s=timeout, retries=retries, dry_run=dry_run,
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    bar = Progress(*columns, console=err, transient=dry_run)
    task: TaskID | None = None  # the bar starts with the first job, so bad input before it stays one line on stderr
    failed = 0

    def progress(event: str, job: JobSpec, finished: int, total: int) -> None:
        nonlocal failed, task
        if task is None:
            bar.start()
            task = bar.add_task("jobs", total=None)
        label = f"{job.dataset}/{job.architecture}/{job.pruner.label}@{job.sparsity:g}/s{job.seed}"
        failed += event == "failed"
        bar.update(task, total=total, completed=finished, description=f"{label} ({failed} failed)")
        if event == "failed":
            err.print(f"[red]failed[/] {label}")
        elif not err.is_terminal:
            # Off a terminal (nohup, a batch system's log) the bar draws nothing until the end: a dated line per
            # job started or finished, so a day-long run's log shows where it stands.
            err.print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {event} {finished}/{total} {label}", highlight=False, soft_wrap=True)

    try:
        if db.exists():
            check_run_target(db)  # a foreign or damaged --db is refused before anything else starts
        try:
            with stop_signals_interrupt():
                summary = run_grid(opts, progress)
        finally:
            if task is not None:
                bar.stop()
    except HarnessError as exc:
        _fail(exc)
    except KeyboardInterrupt as exc:
        how = signame(exc)
        err.print(f"interrupted ({how}): running jobs marked 'interrupted', workers stopped; run the same command again to finish them")
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None
    if dry_run:
        p = summary.planned
        console.print(
            f"grid [bold]{escape(summary.grid)}[/] is valid: {summary.total} jobs, {summary.cached} already done in {escape(str(db))}; a run would train "
            f"{p['dense']} dense models, make {p['pruned']} pruned models (prune + fine-tune) and evaluate {p['eval']} jobs. Nothing was run."
        )
        for note in summary.notes:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        return
    console.print(
        f"grid [bold]{escape(summary.grid)}[/]: {summary.total} jobs, {summary.done} run, {summary.cached} already done, "
        f"{len(summary.failed)} failed, {summary.seconds:.1f} s. Results in {escape(str(db))}; site in {escape(str(site_dir))}/index.html"
    )
    for note in summary.notes:
        err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    for key, line in summary.failed:
        err.print(f"  [red]{key}[/]: {escape(line)}", highlight=False)
    if summary.failed:
        raise typer.Exit(1)


@app.command("list")
def list_(
    kind: Annotated[Kind, typer.Argument(help="What to list.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered plugins or built-in grids."""
    if kind is Kind.grids:
        from harness.engine.grid import builtin_grids, load_grid

        items = []
        for name, path in builtin_grids().items():
            try:
                g = load_grid(str(path))
                items.append({"name": name, "description": g.description, "jobs": len(g.jobs), "path": str(path)})
            except HarnessError as exc:
                items.append({"name": name, "description": f"invalid: {exc}", "jobs": 0, "path": str(path)})
    else:
        from harness.api.plugins import REGISTRIES

        items = []
        for e in REGISTRIES[kind.value].entries():
            d = e.as_dict()
            if kind in (Kind.pruners, Kind.attacks):
                d["family" if kind is Kind.pruners else "threat_model"] = getattr(e.obj, "family" if kind is Kind.pruners else "threat_model", "")
            items.append(d)
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title=kind.value)
    cols = ["name", "jobs", "description"] if kind is Kind.grids else ["name"] + (["family"] if kind is Kind.pruners else ["threat_model"] if kind is Kind.attacks else []) + ["description"]
    for c in cols:
        table.add_column(c)
    for it in items:
        table.add_row(*(str(it.get(c, "")) for c in cols))
    console.print(table)


@app.command()
def status(db: DbOpt = DEFAULT_DB) -> None:
    """Jobs by state in the database, with the first line of each failure."""
    from harness.store.queries import failed_jobs, runs_in_flight, status_counts
    from harness.store.session import Store

    try:
        store = Store(db, readonly=True)
    except HarnessError as exc:
        _fail(exc)
    with store.session() as s:
        counts = status_counts(s)
        flight = runs_in_flight(s)
        failures = [(j.key, j.pruner_label, j.architecture, (j.error or "").strip().splitlines()[-1:] or [""]) for j in failed_jobs(s)]
    table = Table(title=f"jobs in {db}")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state, n in counts.items():
        table.add_row(state, str(n))
    console.print(table)
    for key, pruner, arch, line in failures:
        console.print(f"[red]failed[/] {key} {arch}/{pruner}: {escape(line[0])}", highlight=False)
    resumed: dict[tuple[str, int], list[int]] = {}
    for r in flight:
        if r.resumed_by is not None:
            resumed.setdefault((r.grid, r.resumed_by), []).append(r.run_id)
    for (grid, by), ids in resumed.items():
        names, was, its = (f"run {ids[0]}", "was", "its") if len(ids) == 1 else (f"runs {', '.join(map(str, ids))}", "were", "their")
        console.print(f"{names} ({grid}) {was} cut short; run {by}, the latest of that grid, took over {its} unfinished jobs.",
                      highlight=False)
    for r in flight:
        if r.resumed_by is not None:
            continue
        if r.stale_s is not None:
            console.print(f"run {r.run_id} ({r.grid}) stale (no heartbeat for {r.stale_s:.0f} s): its driver is gone; "
                          f"{r.done} done, {r.failed} failed of {r.todo}. Run the same `harness run` again to finish it.", highlight=False)
            continue
        eta = "ETA unknown until a job finishes" if r.eta_s is None else f"ETA {_duration(r.eta_s)}" + (
            " at the pace of this grid's earlier runs" if not r.done + r.failed else "")
        console.print(f"run {r.run_id} ({r.grid}) in flight: {r.done} done, {r.failed} failed of {r.todo}; "
                      f"{_duration(r.elapsed_s)} elapsed, {eta}", highlight=False)


def _duration(seconds: float) -> str:
    """Minutes up to 90 of them, hours beyond: a study's ETA reads 18.9 h, not 1132.3 min."""
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


@app.command()
def results(
    db: DbOpt = DEFAULT_DB,
    format: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
) -> None:
    """Every stored number, one row per (job, metric)."""
    from harness.store.queries import result_rows
    from harness.store.session import Store

    try:
        store = Store(db, readonly=True)
    except HarnessError as exc:
        _fail(exc)
    with store.session() as s:
        rows = [r.as_dict() for r in result_rows(s)]
    if format is Format.json:
        typer.echo(json.dumps(rows, indent=1))
    elif format is Format.csv:
        fields = list(rows[0]) if rows else ["job_key", "metric", "value"]
        w = csv.DictWriter(sys.stdout, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    else:
        table = Table()
        for c in ["job_key", "dataset", "architecture", "pruner", "sparsity", "seed", "metric", "attack", "eps", "value"]:
            table.add_column(c)
        for r in rows:
            table.add_row(*(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c] if r[c] is not None else "") for c in r))
        console.print(table)


@app.command()
def site(
    db: DbOpt = DEFAULT_DB,
    site_dir: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_SITE,
) -> None:
    """Re-render the static leaderboard from the database."""
    from harness.site.build import build_site
    from harness.store.session import Store

    try:
        index = build_site(Store(db, readonly=True), site_dir)
    except HarnessError as exc:
        _fail(exc)
    console.print(f"wrote {index}")


@app.command()
def report(
    db: DbOpt = DEFAULT_DB,
    out: Annotated[Optional[Path], typer.Option(help="Write the Markdown here instead of printing it.")] = None,
    title: Annotated[str, typer.Option(help="Heading of the report.")] = "Study results",
    section: Annotated[Optional[str], typer.Option(help="With --out: replace only the file's part from its `## SECTION` heading on; the prose above stays.")] = None,
) -> None:
    """Markdown report of the study: each pruned row against the fine-tuned control and the dense model, paired, with McNemar p-values."""
    from harness.site.report import report as make_report
    from harness.site.report import splice
    from harness.store.session import Store

    try:
        text = make_report(Store(db, readonly=True), title)
        if section is not None:
            if out is None or not out.is_file():
                raise HarnessError("--section needs --out naming an existing file, e.g. --out docs/study.md --section Tables.")
            text = splice(out.read_text(), section, text).rstrip("\n")
    except HarnessError as exc:
        _fail(exc)
    if out is None:
        typer.echo(text)
    else:
        try:
            atomic_write_text(out, text + "\n")
        except HarnessError as exc:
            _fail(exc)
        console.print(f"wrote {out}")


def main() -> None:
    """Entry point for `python -m harness`."""
    app()


from harness.cli.db import db_app  # noqa: E402  (each command group lives in its own module)
from harness.cli.submit import submit  # noqa: E402

app.command()(submit)
app.add_typer(db_app, name="db")
