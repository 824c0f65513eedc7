"""The `harness submit` command: a thin layer over harness.submission.submit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from harness.api.errors import HarnessError, SubmissionError
from harness.api.paths import EXAMPLES_DIR
from harness.store.schema import check_current

TEMPLATE = EXAMPLES_DIR / "my_pruner.py"

console = Console()
err = Console(stderr=True)


def submit(
    file: Annotated[Optional[Path], typer.Argument(help="Your pruner: one Python file (see --template).")] = None,
    template: Annotated[bool, typer.Option("--template", help="Print a minimal, documented pruner file and exit.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only check the file (contract and dry run); record and run nothing.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Update your own earlier entry of the same name.")] = False,
    grid: Annotated[str, typer.Option(help="Grid to run the entry on (its pruners become none + yours): smoke, full, or a .toml path.")] = "smoke",
    db: Annotated[Path, typer.Option("--db", help="Results database (SQLite).")] = Path(".harness/results.db"),
    site_dir: Annotated[Path, typer.Option(help="Where to re-render the leaderboard.")] = Path(".harness/site"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[int, typer.Option(help="Worker processes on the CPU (the submission runs only in these).")] = 1,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder holding dataset files (e.g. CIFAR-10).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Checkpoint cache (default: .harness beside the DB); dense models there are reused.")] = None,
    time_limit: Annotated[float, typer.Option(help="Seconds the check process may take (import plus two dry runs).")] = 300.0,
    memory_mb: Annotated[int, typer.Option(help="MiB the submission may allocate in the check process, beyond the harness's own.")] = 4096,
    sandbox: Annotated[bool, typer.Option("--sandbox/--no-sandbox", help="Linux: run the check and the workers without network, everything read-only but their private folder (and the workers' cache). On by default where the kernel allows it.")] = True,
) -> None:
    """Submit a pruner: check it in a separate process, record it, run it on a grid and re-render the leaderboard."""
    from harness.scheduling.signals import signame, stop_signals_interrupt
    from harness.submission.submit import SubmitOptions
    from harness.submission.submit import submit as do_submit

    if template:
        typer.echo(TEMPLATE.read_text(), nl=False)
        return
    if file is None:
        raise typer.BadParameter("pass your pruner file, e.g. `harness submit my_pruner.py` (start from `harness submit --template > my_pruner.py`).", param_hint="FILE")
    opts = SubmitOptions(
        grid=grid, db=db, site_dir=site_dir, device=device, workers=workers, data_dir=data_dir, cache_dir=cache_dir,
        replace=replace, dry_run=dry_run, time_limit_s=time_limit, memory_mb=memory_mb, sandbox=sandbox,
        warn=lambda line: err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True),
        # A status that vanishes when the check ends (and prints nothing off a terminal): a refusal stays one line.
        checking=lambda f: err.status(escape(f"checking {f} in a separate process (time limit {time_limit:g} s, memory {memory_mb} MiB{'' if sandbox else ', --no-sandbox'})…")),
    )
    try:
        if db.exists():
            check_current(db)  # a foreign or damaged --db is refused before anything else is said or started
        with stop_signals_interrupt():
            result = do_submit(file, opts, progress=_progress)
    except SubmissionError as exc:
        err.print(f"[bold red]refused:[/] {escape(str(exc))}", highlight=False, soft_wrap=True, markup=True)
        raise typer.Exit(exc.exit_code)
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        err.print(f"interrupted ({signame(exc)}): running jobs marked 'interrupted', workers stopped; run the same `harness submit` with --replace to finish them")
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None
    dry = result.report["dry_run"]
    console.print(
        f"ok: pruner [bold]{escape(result.name)}[/] by {escape(str(result.report['author']))} (sha256 {result.sha256[:12]}…) passed every check; "
        f"dry run on {dry['architecture']}: sparsity {dry['sparsity_achieved']:.3f} for {dry['sparsity_requested']:.3f} requested.",
        highlight=False, markup=True,
    )
    if result.summary is None:
        console.print("--dry-run: nothing recorded or run.")
        return
    s = result.summary
    console.print(f"recorded {result.recorded}; grid {result.grid_file}: {s.total} jobs, {s.done} run, {s.cached} already done, {len(s.failed)} failed, {s.seconds:.1f} s.", highlight=False)
    for r in result.rows:
        clean = "–" if r["clean_acc"] is None else f"{100 * r['clean_acc']:.1f}%"
        dense = "–" if r["dense_clean_acc"] is None else f"{100 * r['dense_clean_acc']:.1f}%"
        console.print(f"  {r['dataset']}/{r['architecture']} sparsity {r['sparsity']:g} seed {r['seed']}: clean {clean} (dense {dense})", highlight=False)
    console.print(f"leaderboard: {site_dir}/index.html")
    for key, line in s.failed:
        err.print(f"  [red]{key}[/]: {escape(line)}", highlight=False)
    if s.failed:
        raise typer.Exit(1)


def _progress(event: str, job: object, i: int, total: int) -> None:
    """One line per finished or failed job on stderr."""
    if event in ("done", "failed"):
        label = f"{job.dataset}/{job.architecture}/{job.pruner.label}@{job.sparsity:g}"  # type: ignore[attr-defined]
        err.print(f"  done {label}" if event == "done" else f"  [red]failed[/] {label}", highlight=False)
