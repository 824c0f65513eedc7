"""`harness submit`: check a pruner file in a separate process, record it in the database, run it on a grid.

The submission's code never runs in this process: checks run in a child forked from a preloaded server
(`harness.submission.check`), grid jobs in the runner's worker processes, each started in an empty private
folder and sandboxed where the kernel allows; this process only reads the child's report, records the file's
bytes in the `submissions` table of the --db it was made against, and drives the run that writes the DB.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import harness
from harness.api.errors import HarnessError, SubmissionError
from harness.api.toml_out import toml_value

KILL_GRACE_S = 5.0

_CTX = mp.get_context("forkserver")
# Forked checks inherit torch and every built-in plugin from the server, so each costs a fork, not an import.
_CTX.set_forkserver_preload(["harness.submission.check"])


@dataclass
class SubmitOptions:
    """What `harness submit` was asked to do."""

    grid: str = "smoke"
    db: Path = Path("results.db")
    site_dir: Path | None = Path("site")
    device: str = "auto"
    workers: int = 1
    data_dir: Path | None = None
    cache_dir: Path | None = None
    replace: bool = False
    dry_run: bool = False
    time_limit_s: float = 300.0
    memory_mb: int = 4096
    sparsity: float = 0.5
    sandbox: bool = True  # kernel sandbox for the check and the workers where available; False: --no-sandbox
    warn: Callable[[str], None] | None = None  # told what is not isolated when the sandbox is unavailable
    checking: Callable[[Path], AbstractContextManager[Any]] | None = None  # wraps the check process (the CLI: a transient status line)


@dataclass
class SubmitResult:
    """What a submit did: the checked entry, where it was recorded, and the grid run (None for --dry-run)."""

    name: str
    sha256: str
    report: dict[str, Any]
    recorded: str | None = None  # where the file was recorded: "<db> (table submissions)"
    summary: Any = None  # harness.runner.RunSummary
    grid_file: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


def sha256_of(data: bytes) -> str:
    """Hex sha256 of a file's bytes: the identity of a submission."""
    return hashlib.sha256(data).hexdigest()


def syntax_check(source: bytes, path: Path) -> None:
    """Compile (never execute) the file, so a syntax error is reported before any process starts."""
    if b"\x00" in source:  # Python 3.11.4+ calls this a SyntaxError without a line; say what the file is instead
        raise SubmissionError(f"{path}: not a Python source file (it holds null bytes; save it as UTF-8 text).")
    try:
        compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise SubmissionError(f"{path}: syntax error at line {exc.lineno}, column {exc.offset}: {exc.msg}; fix the file and submit again.") from None
    except ValueError as exc:  # e.g. null bytes
        raise SubmissionError(f"{path}: not a Python source file ({exc}).") from None


# ---------------------------------------------------------------- the check process


def _kill_group(proc: Any) -> None:
    """SIGKILL the check process and anything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _child(path: str, limits: dict[str, Any], conn: Any) -> None:
    """Check-process entry; importing the checker here keeps the built-in plugins out of this (parent) process."""
    from harness.submission.check import child_main

    child_main(path, limits, conn)


def run_check(path: Path, limits: dict[str, Any], time_limit_s: float) -> dict[str, Any]:
    """Run `harness.submission.check` on `path` in a forked process with a wall-clock limit; returns its report."""
    recv, send = _CTX.Pipe(duplex=False)
    proc = _CTX.Process(target=_child, args=(str(path), limits, send), daemon=True)
    proc.start()
    send.close()
    report: dict[str, Any] | None = None
    try:
        if recv.poll(time_limit_s):
            try:
                report = recv.recv()
            except EOFError:
                report = None
        else:
            _kill_group(proc)
            return {"ok": False, "check": "timeout", "message": f"runs past the time limit of {time_limit_s:g} s (import plus two dry runs on a tiny model); make it faster or raise --time-limit", "trace": ""}
    finally:
        proc.join(KILL_GRACE_S)
        # Also ends anything the submission started and left running in the check's process group.
        _kill_group(proc)
        proc.join()
        recv.close()
    if report is None:
        code = proc.exitcode
        why = f"was killed by signal {signal.Signals(-code).name} (out of memory?)" if code is not None and code < 0 else f"exited with code {code} (does the submission call sys.exit or os._exit?)"
        return {"ok": False, "check": "crash", "message": f"the check process {why} before reporting", "trace": ""}
    return report


def check_file(path: Path, opts: SubmitOptions, protected: list[Path] | None = None, shown: Path | None = None) -> dict[str, Any]:
    """Every contract check on `path` in a separate process; the report, or SubmissionError with the reason.

    The check starts in an empty private folder, the only place it may write; `shown` is the path to name in
    messages when `path` is a private copy of the user's file.
    """
    shown = shown or path
    source = path.read_bytes()
    syntax_check(source, shown)
    guarded = [Path(opts.db).resolve()] + list(protected or [])
    with tempfile.TemporaryDirectory(prefix="harness-check-") as workdir:
        limits = {
            "memory_mb": opts.memory_mb,
            "sparsity": opts.sparsity,
            "protected": [str(p) for p in guarded],
            "sandbox": opts.sandbox and sandbox_ready(opts),
            "workdir": workdir,
        }
        report = run_check(path, limits, opts.time_limit_s)
    if not report.get("ok"):
        if report.get("check") == "sandbox":
            raise HarnessError(report["message"])
        message = report["message"].rstrip(".")
        if report.get("check") == "memory":
            message += f" ({opts.memory_mb} MiB beyond the harness's own); use less, or raise --memory-mb if it is legitimate"
        trace = f" ({report['trace']})" if report.get("trace") else ""
        # One line: a message (or an exception's text) spanning lines is joined; the trace is one line already.
        raise SubmissionError(" ".join(f"{shown}: {message}{trace}.".replace(str(path), str(shown)).split()))
    return report


_SANDBOX: dict[str, bool] = {}
NOT_ISOLATED = (
    "the kernel sandbox is not available here (unprivileged user namespaces are off), so the submission's code "
    "runs with your file-system write access and network: only Python-level guards (an audit hook refusing writes "
    "outside its private folder, network use and the results database) and the memory limit apply"
)


def sandbox_ready(opts: SubmitOptions) -> bool:
    """Whether to sandbox: asked for and available; warns once (opts.warn) naming what is not isolated otherwise."""
    if not opts.sandbox:
        return False
    if "ok" not in _SANDBOX:
        from harness.scheduling.isolation import sandbox_available

        _SANDBOX["ok"] = sandbox_available()
        if not _SANDBOX["ok"] and opts.warn is not None:
            opts.warn(NOT_ISOLATED)
    return _SANDBOX["ok"]


# ---------------------------------------------------------------- the submissions of a database


def read_index(db: Path) -> dict[str, Any]:
    """name -> {sha256, author, submitted_at} of the submissions recorded in `db` (none when it does not exist)."""
    from harness.store.queries import submission_records
    from harness.store.session import Store

    if not Path(db).exists():
        return {"submissions": {}}
    store = Store(db, readonly=True)
    try:
        with store.session() as s:
            records = submission_records(s)
    finally:
        store.close()
    return {"submissions": {r.name: {"sha256": r.sha256, "author": r.author, "submitted_at": r.submitted_at.isoformat(timespec="seconds")} for r in records}}


def refuse_duplicate(index: dict[str, Any], sha: str) -> None:
    """A file identical to a recorded submission is refused, whatever its name."""
    for name, e in index["submissions"].items():
        if e.get("sha256") == sha:
            raise SubmissionError(f"duplicate: this file is identical (sha256 {sha[:12]}…) to submission {name!r} recorded {e.get('submitted_at', '')}; nothing to do.")


def refuse_taken(index: dict[str, Any], name: str, author: str, replace: bool) -> None:
    """A recorded name is taken unless --replace comes from the same author."""
    old = index["submissions"].get(name)
    if old is None:
        return
    if not replace:
        raise SubmissionError(f"name {name!r} is taken by the submission of {old.get('author')!r} recorded {old.get('submitted_at', '')}; rename your pruner, or pass --replace to update your own entry.")
    if old.get("author") != author:
        raise SubmissionError(f"--replace refused: {name!r} was submitted by {old.get('author')!r}, this file's author is {author!r}; only the author may replace an entry.")


def record(source: bytes, sha: str, report: dict[str, Any], opts: SubmitOptions, original: Path) -> str:
    """Store the checked bytes and the report in the `submissions` table of opts.db; returns where."""
    from harness.engine.provenance import git_commit
    from harness.store.session import Store

    name = report["name"]
    # Checked again just before writing: another submit may have recorded the same file or name meanwhile.
    index = read_index(Path(opts.db))
    if not opts.replace:
        refuse_duplicate(index, sha)
    refuse_taken(index, name, report["author"], opts.replace)
    store = Store(opts.db)
    try:
        store.record_submission({
            "name": name, "sha256": sha, "source": source, "original_filename": original.name,
            "author": report["author"], "description": report["description"], "paper": report["paper"], "url": report["url"],
            "family": report["family"], "class_name": report["class"], "harness_version": harness.__version__,
            "git_commit": git_commit(), "report": {"dry_run": report["dry_run"]},
        }, replace=opts.replace)
    finally:
        store.close()
    return f"{opts.db} (table submissions)"


# ---------------------------------------------------------------- the grid run


def to_toml(raw: dict[str, Any]) -> str:
    """A parsed grid table back as TOML (keys, then tables, then arrays of tables)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    for k, v in raw.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines += ["", f"[[{k}]]"] + [f"{kk} = {toml_value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


def submission_grid(grid: str, name: str, folder: Path) -> Path:
    """The grid `grid` (built-in name or file) with its pruners replaced by the dense baseline, the control and `name`."""
    from harness.engine.grid import read_grid_file, resolve

    src = resolve(grid)
    raw = read_grid_file(src)
    raw["pruners"] = ["none", "dense_finetuned", name]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}-{src.stem}.toml"
    out.write_text(f"# `harness submit` grid: {src.name} with pruners = none + dense_finetuned + {name}\n" + to_toml(raw))
    return out


def stub_of(report: dict[str, Any], sha: str) -> dict[str, str]:
    """What the driver may know about the submission without importing it (sha256: the recorded file's)."""
    return {k: str(report[k]) for k in ("family", "description", "paper", "author", "url")} | {"sha256": sha}


def stale_results(db: Path, name: str, sha: str) -> int:
    """Done jobs of pruner `name` whose provenance names other code than `sha` (a replaced version's results)."""
    from harness.store.queries import job_records
    from harness.store.session import Store

    if not Path(db).exists():
        return 0
    store = Store(db, readonly=True)
    try:
        with store.session() as s:
            jobs = [j for j in job_records(s) if j.pruner == name]
    finally:
        store.close()
    return sum(1 for j in jobs if j.provenance.get("plugins", {}).get("pruner", {}).get("sha256") != sha)


def leaderboard_rows(db: Path, name: str) -> list[dict[str, Any]]:
    """The submission's done jobs with clean accuracy and change against dense, for the closing summary."""
    from harness.store.queries import job_records
    from harness.store.session import Store

    store = Store(db, readonly=True)
    try:
        with store.session() as s:
            jobs = job_records(s)
    finally:
        store.close()
    dense = {(j.dataset, j.architecture, j.seed): j for j in jobs if j.pruner == "none"}
    rows = []
    for j in jobs:
        if j.pruner != name:
            continue
        base = dense.get((j.dataset, j.architecture, j.seed))
        clean, base_clean = j.get("clean_acc"), base.get("clean_acc") if base else None
        rows.append({"dataset": j.dataset, "architecture": j.architecture, "sparsity": j.sparsity, "seed": j.seed, "clean_acc": clean, "dense_clean_acc": base_clean})
    return rows


def submit(path: Path, opts: SubmitOptions, progress: Callable[..., None] | None = None) -> SubmitResult:
    """Check, record and run one submission; any contract failure raises SubmissionError before anything is written."""
    path = Path(path)
    if path.is_dir():
        raise SubmissionError(f"{path}: a folder; pass the path of your pruner file, one .py file (see `harness submit --template`).")
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file; pass the path of your pruner file (see `harness submit --template`).")
    if path.suffix != ".py":
        raise SubmissionError(f"{path}: a submission is one Python file ending in .py.")
    if opts.workers < 1:
        raise SubmissionError(f"--workers {opts.workers}: a submission runs in worker processes only; use 1 or more.")
    if not opts.time_limit_s > 0:
        raise SubmissionError(f"--time-limit {opts.time_limit_s:g}: pass the seconds the check may take, more than 0 (default 300).")
    if opts.memory_mb < 1:
        raise SubmissionError(f"--memory-mb {opts.memory_mb}: pass the MiB the submission may allocate, 1 or more (default 4096).")
    if Path(opts.db).exists():
        from harness.store.schema import check_current

        check_current(opts.db)  # a foreign or damaged --db is refused before anything runs
    from harness.engine.grid import read_grid_file, resolve

    read_grid_file(resolve(opts.grid))  # a bad --grid fails before anything is checked or written
    source = path.read_bytes()
    sha = sha256_of(source)
    if not opts.replace:  # with --replace the same file may be submitted again, e.g. to finish an interrupted run
        refuse_duplicate(read_index(Path(opts.db)), sha)
    with tempfile.TemporaryDirectory(prefix="harness-submit-") as tmp:
        # The check runs on a private copy, so the bytes recorded are exactly the bytes checked.
        staged = Path(tmp) / "src" / path.name
        staged.parent.mkdir()
        staged.write_bytes(source)
        with opts.checking(path) if opts.checking is not None else nullcontext():
            report = check_file(staged, opts, shown=path)
        refuse_taken(read_index(Path(opts.db)), report["name"], report["author"], opts.replace)
        result = SubmitResult(report["name"], sha, report)
        if opts.dry_run:
            return result
        stale = stale_results(Path(opts.db), result.name, sha)
        if stale:
            # Job and checkpoint keys hold the file's sha256, so nothing would be reused; but the leaderboard groups rows
            # by pruner name and parameters, and would pool the old code's results with this file's.
            raise SubmissionError(
                f"{opts.db} holds {stale} result(s) of a pruner named {result.name!r} computed by other code (an earlier version?), "
                f"which the leaderboard would pool with this file's under one name; submit to a fresh --db, or under a new name."
            )
        from harness.scheduling.runner import RunOptions, run

        run_opts = RunOptions(
            grid="",
            db=Path(opts.db),
            site_dir=opts.site_dir,
            device=opts.device,
            workers=opts.workers,
            data_dir=opts.data_dir,
            cache_dir=opts.cache_dir,
            # Workers import the recorded bytes from a file outside the checkout, never from the package.
            plugin_files=[staged.resolve()],
            pruner_stubs={result.name: stub_of(report, sha)},
            sandbox=opts.sandbox and sandbox_ready(opts),
        )
        result.grid_file = submission_grid(opts.grid, result.name, run_opts.cache_root / "submission-grids")
        run_opts.grid = str(result.grid_file)
        # Everything the run checks (the grid's contents, the device, the datasets) is checked before the file is
        # recorded: a bad grid or a missing dataset must leave the database as it was.
        run(replace(run_opts, dry_run=True))
        result.recorded = record(source, sha, report, opts, path)
        result.summary = run(run_opts, progress)
    if Path(opts.db).exists():
        result.rows = leaderboard_rows(Path(opts.db), result.name)
    return result
