"""Tests written against surviving `harness submit` mutants: what a submission is refused for, and in which words.

Pins the contract checks of harness/submission/check.py (one pruner and nothing else, constructible, metadata,
finalize, the numbers of the dry-run report, `python -m harness.submission.check`), the parent side of
harness/submission/submit.py (messages naming the user's file, the time limit, the sandbox warning, the submissions
table, the grid it writes, stale results, leaderboard rows, the order: validate, check, dry-run the grid, record, run) and the
lines harness/cli/submit.py prints. Expected messages and numbers are written out by hand; the grid run is replaced
by a recorder, the check process by a canned report where only the parent's handling is under test.
"""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import harness
import harness.submission.submit as sub
from harness.api.errors import HarnessError, SubmissionError
from harness.api.metrics import Metric
from harness.cli.main import app
from harness.store.session import Store
from harness.submission.submit import SubmitOptions, SubmitResult

TEMPLATE = Path(__file__).resolve().parent.parent / "examples" / "my_pruner.py"

HEAD = """
import torch
from torch import Tensor, nn
from harness import register_architecture, register_pruner
from harness.pruning import Pruner, ScoredFilterPruner
"""

L1_SCORE = '''
    def score(self, weight: Tensor) -> Tensor:
        """Per-filter L1 norm."""
        return weight.abs().flatten(1).sum(1)
'''


def pruner_file(meta: str = 'author="Ada"', body: str = "", before: str = "", base: str = "ScoredFilterPruner") -> str:
    """A submission registering `sub_pruner` (an L1 filter pruner unless `body` says otherwise)."""
    return HEAD + before + textwrap.dedent(f'''
@register_pruner("sub_pruner", {meta})
class Sub({base}):
    """Keeps the filters with the largest L1 norm."""
''') + (body or L1_SCORE)


def options(tmp_path: Path, **kw: Any) -> SubmitOptions:
    """Options for a tmp DB and site, unsandboxed (no kernel probe), generous limits."""
    base: dict[str, Any] = {"db": tmp_path / "results.db", "site_dir": tmp_path / "site", "time_limit_s": 120.0, "memory_mb": 1024, "sandbox": False}
    return SubmitOptions(**(base | kw))


def refusal(tmp_path: Path, source: str, **kw: Any) -> str:
    """The one-line SubmissionError `check_file` raises for `source`, written to tmp_path/my_pruner.py."""
    path = tmp_path / "my_pruner.py"
    path.write_text(source)
    with pytest.raises(SubmissionError) as info:
        sub.check_file(path, options(tmp_path, **kw))
    return str(info.value)


# ---- check.py: the contract, checked in the child process


def test_a_pruner_that_also_registers_an_architecture_is_refused(tmp_path: Path) -> None:
    """A submission registers exactly one pruner and nothing else: an extra architecture is named in the refusal."""
    arch = textwrap.dedent('''
        @register_architecture("sub_arch")
        def sub_arch(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
            """A linear model."""
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    ''')
    message = refusal(tmp_path, pruner_file(before=arch))
    assert "also registers architecture 'sub_arch'; a submission registers exactly one pruner and nothing else" in message


def test_a_pruner_needing_constructor_arguments_is_refused_as_a_signature(tmp_path: Path) -> None:
    """An __init__ parameter without a default is a signature refusal, before any dry run."""
    body = L1_SCORE + textwrap.indent(textwrap.dedent('''
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k
    '''), "    ")
    message = refusal(tmp_path, pruner_file(body=body))
    assert "wrong signature: Sub() must be constructible without arguments (give every __init__ parameter a default)" in message


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ('author="   "', "pruner 'sub_pruner' has no author: pass author="),
        ('author="Ada", description="   "', "pruner 'sub_pruner' has no description: give the class a one-line docstring"),
        ('author="Ada", url="ftp://example.org/x"', "url 'ftp://example.org/x' must start with https:// or http://"),
    ],
)
def test_blank_or_bad_metadata_is_refused(meta: str, words: str, tmp_path: Path) -> None:
    """A blank author or description, or a url that is not http(s), is refused with the fix."""
    assert words in refusal(tmp_path, pruner_file(meta=meta))


def test_an_https_url_is_kept_in_the_report(tmp_path: Path) -> None:
    """A https:// url passes and is reported as given."""
    path = tmp_path / "my_pruner.py"
    path.write_text(pruner_file(meta='author="Ada", url="https://example.org/x"'))
    report = sub.check_file(path, options(tmp_path))
    assert report["ok"] and report["url"] == "https://example.org/x" and report["author"] == "Ada"


def test_a_pruner_of_an_unknown_family_is_refused_by_metadata(tmp_path: Path) -> None:
    """A Pruner whose family is none of filter, layer, unstructured is refused naming the base classes."""
    body = '''
    family = "channel"

    def prune(self, model: nn.Module, sparsity: float, ctx: object) -> nn.Module:
        """Returns the model unchanged."""
        return model
'''
    message = refusal(tmp_path, pruner_file(body=body, base="Pruner"))
    assert "family 'channel' is not one of filter, layer, unstructured; subclass ScoredFilterPruner" in message


def test_sys_exit_at_import_is_reported_as_raised_while_importing(tmp_path: Path) -> None:
    """sys.exit in the module body is the submission's error, reported with where it happened and its code."""
    message = refusal(tmp_path, pruner_file(before="import sys\nsys.exit(3)\n"))
    assert "raised SystemExit while importing: 3" in message


def test_finalize_returning_something_else_than_a_module_is_refused(tmp_path: Path) -> None:
    """finalize's result is what the harness keeps: a dict there is refused by type."""
    body = L1_SCORE + '''
    def finalize(self, model: nn.Module) -> nn.Module:
        """Wraps the model (wrongly)."""
        return {"model": model}  # type: ignore[return-value]
'''
    assert "finalize returned dict; it must return a torch.nn.Module" in refusal(tmp_path, pruner_file(body=body))


def test_an_exception_message_spanning_lines_is_cut_to_its_first(tmp_path: Path) -> None:
    """Only the first line of the exception's text is shown (its later lines are often a dump)."""
    body = '''
    def score(self, weight: Tensor) -> Tensor:
        """Fails."""
        raise ValueError(DUMP)
'''
    message = refusal(tmp_path, pruner_file(body=body, before='DUMP = "first line of the reason" + chr(10) + "second line of a long dump"\n'))
    assert "raised ValueError during pruning: first line of the reason" in message
    assert "second line" not in message


def test_dry_run_report_holds_the_measured_sparsity_and_the_one_filter_per_layer_tolerance(tmp_path: Path) -> None:
    """At a request of 0.3 small_cnn (32+64+128 filters) cannot be pruned exactly: the report has the measured k/224, within 3/224."""
    report = sub.check_file(TEMPLATE, options(tmp_path, sparsity=0.3))
    dry = report["dry_run"]
    total = 32 + 64 + 128  # small_cnn's three prunable convs, from its definition
    assert dry["architecture"] == "small_cnn" and dry["sparsity_requested"] == 0.3
    assert dry["tolerance"] == pytest.approx(3 / total)
    removed = dry["sparsity_achieved"] * total
    assert removed == pytest.approx(round(removed), abs=1e-6)  # a whole number of filters, so never 0.3 * 224 = 67.2
    assert abs(dry["sparsity_achieved"] - 0.3) <= 3 / total


@pytest.fixture
def in_process_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """harness.submission.check with its process-wide guards (audit hook, memory limit, threads) left out."""
    from harness.submission import check

    threads = torch.get_num_threads()
    monkeypatch.setattr(check, "guard_paths", lambda *a, **k: None)
    monkeypatch.setattr(check, "limit_memory", lambda *a, **k: None)
    yield check
    torch.set_num_threads(threads)


def test_check_module_main_exits_2_with_the_json_report_of_a_bad_file(in_process_check: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m harness.submission.check FILE --json` on a file registering nothing: exit status 2, the count failure."""
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    assert in_process_check.main([str(path), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["check"] == "count" and report["message"].startswith("no pruner registered")


def test_check_module_by_hand_guards_every_db_given(tmp_path: Path) -> None:
    """`python -m harness.submission.check FILE --db A --db B`: opening A is refused (exit 2, check 'db'), A unchanged."""
    import os
    import subprocess
    import sys

    dbs = [tmp_path / "a.db", tmp_path / "b.db"]
    for db in dbs:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE results (x INTEGER)")
        con.commit()
        con.close()
    before = dbs[0].read_bytes()
    body = L1_SCORE + f'''
    def prune(self, model: nn.Module, sparsity: float, ctx: object) -> nn.Module:
        """Tries the first results DB, then prunes."""
        import sqlite3
        try:
            sqlite3.connect({str(dbs[0])!r}).execute("DELETE FROM results")
        except Exception:
            pass
        return super().prune(model, sparsity, ctx)
'''
    path = tmp_path / "my_pruner.py"
    path.write_text(pruner_file(body=body))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "harness.submission.check", str(path), "--db", str(dbs[0]), "--db", str(dbs[1]), "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 2, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["ok"] is False and report["check"] == "db" and "tries to open the results database" in report["message"]
    assert dbs[0].read_bytes() == before


# ---- submit.py: the parent's reading of the check's report


def test_syntax_error_names_line_then_column() -> None:
    """'b = = 2' on line 2: the second '=' is column 5."""
    with pytest.raises(SubmissionError) as info:
        sub.syntax_check(b"a = 1\nb = = 2\n", Path("f.py"))
    assert str(info.value) == "f.py: syntax error at line 2, column 5: invalid syntax; fix the file and submit again."


def test_a_file_with_null_bytes_is_not_a_python_source_file() -> None:
    """A file holding a NUL byte is refused as not Python source, not with a syntax error at 'line None'."""
    with pytest.raises(SubmissionError) as info:
        sub.syntax_check(b"x = 1\x00\n", Path("f.py"))
    assert "not a Python source file" in str(info.value) and "None" not in str(info.value)


def canned(monkeypatch: pytest.MonkeyPatch, report: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """Replace the check process by `report` ({path} in its message becomes the checked path); returns the calls."""
    calls: list[tuple[Path, dict[str, Any]]] = []

    def fake(path: Path, limits: dict[str, Any], time_limit_s: float) -> dict[str, Any]:
        calls.append((path, limits))
        return {k: v.replace("{path}", str(path)) if isinstance(v, str) else v for k, v in report.items()}

    monkeypatch.setattr(sub, "run_check", fake)
    return calls


def staged_copy(tmp_path: Path) -> tuple[Path, Path]:
    """(the user's file, a private copy of it elsewhere), as `submit` checks it."""
    user = tmp_path / "mine" / "my_pruner.py"
    copy = tmp_path / "private" / "src" / "my_pruner.py"
    for p in (user, copy):
        p.parent.mkdir(parents=True)
        p.write_text(pruner_file())
    return user, copy


def test_refusal_names_the_users_file_on_one_line_ending_in_one_period(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The private copy's path becomes the user's; lines are joined; the message's own period is not doubled."""
    user, copy = staged_copy(tmp_path)
    calls = canned(monkeypatch, {"ok": False, "check": "import", "message": "raised OSError while importing: cannot read {path}\nsee above.", "trace": "submission frames only: line 3 in <module>"})
    with pytest.raises(SubmissionError) as info:
        sub.check_file(copy, options(tmp_path), shown=user)
    assert str(info.value) == f"{user}: raised OSError while importing: cannot read {user} see above (submission frames only: line 3 in <module>)."
    assert calls[0][0] == copy and calls[0][1]["protected"] == [str((tmp_path / "results.db").resolve())]


def test_memory_refusal_names_the_limit_and_the_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Past --memory-mb: the MiB given and how to raise them."""
    user, copy = staged_copy(tmp_path)
    canned(monkeypatch, {"ok": False, "check": "memory", "message": "allocates past the memory limit during pruning", "trace": ""})
    with pytest.raises(SubmissionError) as info:
        sub.check_file(copy, options(tmp_path, memory_mb=77), shown=user)
    assert str(info.value) == f"{user}: allocates past the memory limit during pruning (77 MiB beyond the harness's own); use less, or raise --memory-mb if it is legitimate."


def test_the_time_limit_stops_a_check_that_never_ends(tmp_path: Path) -> None:
    """A check sleeping for an hour is stopped at its 2 s limit and refused, naming the limit (no timing is asserted:
    without the limit this test would hang, not pass)."""
    body = '''
    def score(self, weight: Tensor) -> Tensor:
        """Sleeps."""
        import time
        time.sleep(3600)
        return weight.abs().flatten(1).sum(1)
'''
    message = refusal(tmp_path, pruner_file(body=body), time_limit_s=2.0)
    assert "runs past the time limit of 2 s" in message


class _WaitsRecorded:
    """The receiving end of the check's pipe, recording each wait and reporting that nothing arrived."""

    def __init__(self, inner: Any, waits: list[float]) -> None:
        self.inner, self.waits = inner, waits

    def poll(self, timeout: float) -> bool:
        """Record the wait asked for; say no report came within it."""
        self.waits.append(timeout)
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_parent_waits_exactly_the_time_limit_for_the_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The only wait for the child's report is the --time-limit itself (2 s here), after which it is refused."""
    waits: list[float] = []
    real = sub._CTX

    class Ctx:
        """The forkserver context, with the pipe's receiving end recorded."""

        Process = real.Process

        @staticmethod
        def Pipe(duplex: bool) -> tuple[Any, Any]:
            recv, send = real.Pipe(duplex=duplex)
            return _WaitsRecorded(recv, waits), send

    monkeypatch.setattr(sub, "_CTX", Ctx)
    path = tmp_path / "my_pruner.py"
    path.write_text(pruner_file())
    report = sub.run_check(path, {}, time_limit_s=2.0)
    assert waits == [2.0] and report["check"] == "timeout" and "time limit of 2 s" in report["message"]


def test_a_sandbox_that_cannot_start_is_a_harness_error_not_a_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The machine, not the file, is at fault: HarnessError with the child's message, never SubmissionError."""
    user, copy = staged_copy(tmp_path)
    text = "the sandbox is not available on this machine: EPERM; pass --no-sandbox to check without it"
    canned(monkeypatch, {"ok": False, "check": "sandbox", "message": text, "trace": ""})
    with pytest.raises(HarnessError) as info:
        sub.check_file(copy, options(tmp_path), shown=user)
    assert not isinstance(info.value, SubmissionError) and str(info.value) == text


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh sandbox cache and a sandbox_available that answers `kernel['ok']` and counts its calls."""
    state: dict[str, Any] = {"ok": False, "calls": 0}

    def available() -> bool:
        state["calls"] += 1
        return bool(state["ok"])

    monkeypatch.setattr(sub, "_SANDBOX", {})
    monkeypatch.setattr("harness.scheduling.isolation.sandbox_available", available)
    return state


def test_sandbox_unavailable_warns_once_and_is_not_used(kernel: dict[str, Any], tmp_path: Path) -> None:
    """Without the kernel sandbox: False each time, the NOT_ISOLATED warning once, the kernel probed once."""
    warned: list[str] = []
    opts = options(tmp_path, sandbox=True, warn=warned.append)
    assert [sub.sandbox_ready(opts), sub.sandbox_ready(opts)] == [False, False]
    assert warned == [sub.NOT_ISOLATED] and kernel["calls"] == 1


def test_sandbox_available_is_used_without_a_warning(kernel: dict[str, Any], tmp_path: Path) -> None:
    """With the kernel sandbox: True and nothing said."""
    kernel["ok"] = True
    warned: list[str] = []
    assert sub.sandbox_ready(options(tmp_path, sandbox=True, warn=warned.append)) is True
    assert warned == []


def test_no_sandbox_is_never_sandboxed_and_never_probes(kernel: dict[str, Any], tmp_path: Path) -> None:
    """--no-sandbox: False even where the kernel allows it, without asking the kernel."""
    kernel["ok"] = True
    assert sub.sandbox_ready(options(tmp_path, sandbox=False)) is False
    assert kernel["calls"] == 0


# ---- submit.py: the submissions table


def earlier(db: Path, name: str = "earlier", sha: str = "e" * 64, author: str = "Ada") -> None:
    """A submission row as an earlier `harness submit` recorded it."""
    store = Store(db)
    store.record_submission({"name": name, "sha256": sha, "source": b"# earlier\n", "original_filename": f"{name}.py", "author": author,
                             "description": "earlier", "family": "filter", "class_name": "X", "harness_version": "0"})
    store.close()


REPORT = {"name": "mine", "author": "Bob", "description": "Mine.", "paper": "P", "url": "", "family": "filter", "class": "Mine",
          "dry_run": {"architecture": "small_cnn", "sparsity_requested": 0.5, "sparsity_achieved": 0.5}}


def test_read_index_of_a_missing_db_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    """No DB yet: no submissions, and no file made by asking."""
    assert sub.read_index(tmp_path / "none.db") == {"submissions": {}}
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    ("name", "sha", "words"),
    [("other_name", "e" * 64, "duplicate: this file is identical (sha256 eeeeeeeeeeee…) to submission 'earlier'"),
     ("earlier", "f" * 64, "name 'earlier' is taken by the submission of 'Ada'")],
)
def test_record_rechecks_duplicates_and_taken_names_before_writing(name: str, sha: str, words: str, tmp_path: Path) -> None:
    """A file or name recorded meanwhile is refused at the last moment, and the table keeps its one row."""
    db = tmp_path / "results.db"
    earlier(db)
    before = sub.read_index(db)
    with pytest.raises(SubmissionError, match=re.escape(words)):
        sub.record(b"# mine\n", sha, REPORT | {"name": name}, options(tmp_path), Path("my_pruner.py"))
    assert sub.read_index(db) == before


def test_record_stores_the_bare_file_name_and_the_dry_run(tmp_path: Path) -> None:
    """The table holds the file's name (not where it lay), the harness version and the dry-run report."""
    from harness.store.queries import submission_records

    where = sub.record(b"# mine\n", "a" * 64, REPORT, options(tmp_path), tmp_path / "deep" / "my_pruner.py")
    assert where == f"{tmp_path / 'results.db'} (table submissions)"
    with Store(tmp_path / "results.db", readonly=True).session() as s:
        (rec,) = submission_records(s)
    assert (rec.name, rec.sha256, rec.author, rec.class_name, rec.original_filename) == ("mine", "a" * 64, "Bob", "Mine", "my_pruner.py")
    assert rec.harness_version == harness.__version__ and rec.report == {"dry_run": REPORT["dry_run"]}


# ---- submit.py: the grid, stubs, stale results and rows


def test_grid_written_back_keeps_a_mixed_array_inline() -> None:
    """A list of strings and tables (attacks = ["fgsm", {name = "pgd"}]) stays one inline array; a list of tables becomes [[tables]]."""
    raw = {"name": "g", "attacks": ["fgsm", {"name": "pgd", "steps": 10}], "train": {"epochs": 1}, "extra": [{"a": 1}, {"a": 2}]}
    text = sub.to_toml(raw)
    assert tomllib.loads(text) == raw
    assert text.count("[[extra]]") == 2 and "[[attacks]]" not in text


def test_submission_grid_keeps_the_grid_and_runs_dense_control_and_the_entry(tmp_path: Path) -> None:
    """pruners become none, dense_finetuned, the entry; every other key is kept; the file is named entry-grid.toml."""
    grid = tmp_path / "g.toml"
    grid.write_text('name = "g"\ndatasets = ["digits"]\narchitectures = ["small_cnn"]\npruners = ["l1_filter"]\nsparsities = [0.5]\nseeds = [0, 1]\n\n[train]\nepochs = 1\n')
    out = sub.submission_grid(str(grid), "mine", tmp_path / "grids")
    assert out == tmp_path / "grids" / "mine-g.toml"
    written = tomllib.loads(out.read_text())
    assert written == tomllib.loads(grid.read_text()) | {"pruners": ["none", "dense_finetuned", "mine"]}


def test_stub_is_the_reports_metadata_and_the_recorded_files_sha() -> None:
    """What the driver knows of a submission: five metadata strings and the sha256 passed in."""
    assert sub.stub_of(REPORT, "a" * 64) == {"family": "filter", "description": "Mine.", "paper": "P", "author": "Bob", "url": "", "sha256": "a" * 64}


def done(store: Store, key: str, pruner: str, seed: int, clean: float, sha: str | None = None) -> None:
    """One done job of `pruner` on d/a at sparsity 0.5, its provenance naming the submitted file `sha`."""
    run = store.start_run("g", "g.toml", 1, {})
    fields = {"dataset": "d", "architecture": "a", "pruner": pruner, "pruner_label": pruner, "sparsity": 0.5, "seed": seed,
              "dense_key": f"dense-{seed}", "pruned_key": f"pruned-{key}", "params": {}}
    store.claim(key, run, fields)
    provenance = {"plugins": {"pruner": {"sha256": sha}}} if sha else {}
    store.complete(key, [Metric("clean_acc", clean)], provenance, 1.0)


def test_stale_results_counts_only_this_names_jobs_by_other_code(tmp_path: Path) -> None:
    """mine by this file once, mine by another file twice, other by another file once: 2 stale; no DB: 0."""
    db = tmp_path / "results.db"
    store = Store(db)
    done(store, "k1", "mine", 0, 0.7, "a" * 64)
    done(store, "k2", "mine", 1, 0.7, "b" * 64)
    done(store, "k3", "mine", 2, 0.7, "b" * 64)
    done(store, "k4", "other", 0, 0.7, "b" * 64)
    store.close()
    assert sub.stale_results(db, "mine", "a" * 64) == 2
    assert sub.stale_results(tmp_path / "none.db", "mine", "a" * 64) == 0


def test_leaderboard_rows_pair_each_seed_with_its_own_dense_model(tmp_path: Path) -> None:
    """Only the entry's jobs, each beside the dense (pruner none) job of the same dataset, architecture and seed."""
    db = tmp_path / "results.db"
    store = Store(db)
    done(store, "n0", "none", 0, 0.9)
    done(store, "n1", "none", 1, 0.8)
    done(store, "m0", "mine", 0, 0.7)
    done(store, "m1", "mine", 1, 0.6)
    done(store, "o0", "other", 0, 0.5)
    done(store, "m2", "mine", 2, 0.4)
    store.close()
    rows = sorted(sub.leaderboard_rows(db, "mine"), key=lambda r: r["seed"])
    common = {"dataset": "d", "architecture": "a", "sparsity": 0.5}
    assert rows == [common | {"seed": 0, "clean_acc": 0.7, "dense_clean_acc": 0.9}, common | {"seed": 1, "clean_acc": 0.6, "dense_clean_acc": 0.8},
                    common | {"seed": 2, "clean_acc": 0.4, "dense_clean_acc": None}]


# ---- submit.py: what is refused before anything runs, and the order of the rest


def foreign_db(path: Path) -> None:
    """An SQLite file of another program (one table, `notes`)."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    ("file", "kw", "words"),
    [("nope.py", {}, "nope.py: no such file; pass the path of your pruner file"),
     ("pruner.txt", {}, "pruner.txt: a submission is one Python file ending in .py."),
     ("my_pruner.py", {"workers": 0}, "--workers 0: a submission runs in worker processes only; use 1 or more."),
     ("my_pruner.py", {"time_limit_s": 0.0}, "--time-limit 0: pass the seconds the check may take, more than 0")],
)
def test_bad_file_or_option_is_refused_before_anything_runs(file: str, kw: dict[str, Any], words: str, tmp_path: Path) -> None:
    """A missing or non-.py file, no workers, no time: SubmissionError naming it; no DB made."""
    for name in ("pruner.txt", "my_pruner.py"):
        (tmp_path / name).write_text(TEMPLATE.read_text())
    with pytest.raises(SubmissionError) as info:
        sub.submit(tmp_path / file, options(tmp_path, dry_run=True, **kw))
    assert words in str(info.value)
    assert not (tmp_path / "results.db").exists()


def test_a_foreign_db_is_refused_before_the_check_even_when_replacing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An SQLite file of another program as --db: its own refusal before any check process (also with --replace), the file unchanged."""
    def no_check(*a: Any, **k: Any) -> dict[str, Any]:
        raise AssertionError("the check ran before the --db was refused")

    monkeypatch.setattr(sub, "check_file", no_check)
    db = tmp_path / "other.db"
    foreign_db(db)
    before = db.read_bytes()
    for replace in (False, True):
        with pytest.raises(HarnessError, match="is an SQLite database of another program"):
            sub.submit(TEMPLATE, options(tmp_path, db=db, dry_run=True, replace=replace))
    assert db.read_bytes() == before


def test_a_bad_grid_is_refused_even_with_dry_run_before_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--grid naming no file fails before the check process starts, --dry-run or not."""
    def no_check(*a: Any, **k: Any) -> dict[str, Any]:
        raise AssertionError("the check ran before the grid was read")

    monkeypatch.setattr(sub, "check_file", no_check)
    with pytest.raises(HarnessError):
        sub.submit(TEMPLATE, options(tmp_path, dry_run=True, grid=str(tmp_path / "missing.toml")))


def test_an_identical_file_is_refused_before_the_check_unless_replacing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Same bytes as a recorded submission: refused before any process starts; with --replace its author may submit it again."""
    sha = sub.sha256_of(TEMPLATE.read_bytes())
    earlier(tmp_path / "results.db", name="mine", sha=sha, author="Bob")
    checked: list[Path] = []

    def check(path: Path, opts: SubmitOptions, shown: Path | None = None) -> dict[str, Any]:
        checked.append(path)
        return dict(REPORT)

    monkeypatch.setattr(sub, "check_file", check)
    with pytest.raises(SubmissionError, match="duplicate: this file is identical"):
        sub.submit(TEMPLATE, options(tmp_path, dry_run=True))
    assert checked == []
    result = sub.submit(TEMPLATE, options(tmp_path, dry_run=True, replace=True))
    assert result.name == "mine" and result.sha256 == sha and len(checked) == 1


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Replace the grid run: each call notes its options and what the DB held; the real run adds two done jobs."""
    calls: list[dict[str, Any]] = []

    def fake_run(opts: Any, progress: Any = None) -> Any:
        calls.append({"dry_run": opts.dry_run, "recorded": sorted(sub.read_index(Path(opts.db))["submissions"]), "progress": progress,
                      "plugin_files": [(p.parent, p.read_bytes()) for p in opts.plugin_files], "sandbox": opts.sandbox, "stubs": dict(opts.pruner_stubs), "grid": opts.grid})
        if not opts.dry_run:
            store = Store(opts.db)
            done(store, "n0", "none", 0, 0.9)
            done(store, "m0", "l1_over_l2_filter", 0, 0.75)
            store.close()
        return SimpleNamespace(total=2, done=2, cached=0, failed=[], seconds=1.0)

    monkeypatch.setattr("harness.scheduling.runner.run", fake_run)
    return calls


def test_submit_dry_runs_the_grid_then_records_then_runs_the_private_copy(recorder: list[dict[str, Any]], tmp_path: Path) -> None:
    """Grid dry run with nothing recorded, then the record, then the run of the recorded bytes from a private copy; rows read back."""
    def progress(*a: Any) -> None:
        return None

    opts = options(tmp_path, cache_dir=tmp_path / "cache")
    result = sub.submit(TEMPLATE, opts, progress=progress)
    source = TEMPLATE.read_bytes()
    first, second = recorder
    assert (first["dry_run"], first["recorded"]) == (True, [])
    assert (second["dry_run"], second["recorded"], second["progress"]) == (False, ["l1_over_l2_filter"], progress)
    ((folder, data),) = second["plugin_files"]
    assert data == source and folder != TEMPLATE.parent
    assert second["stubs"]["l1_over_l2_filter"]["sha256"] == sub.sha256_of(source) == result.sha256
    assert Path(second["grid"]) == result.grid_file == (tmp_path / "cache" / "submission-grids" / "l1_over_l2_filter-smoke.toml").resolve()
    assert result.recorded == f"{opts.db} (table submissions)" and result.summary.total == 2
    assert result.rows == [{"dataset": "d", "architecture": "a", "sparsity": 0.5, "seed": 0, "clean_acc": 0.75, "dense_clean_acc": 0.9}]


def test_stale_results_of_the_same_name_refuse_the_run_and_record_nothing(recorder: list[dict[str, Any]], tmp_path: Path) -> None:
    """A DB holding the name's results from other code: refused after the check, no run, no record."""
    store = Store(tmp_path / "results.db")
    done(store, "old", "l1_over_l2_filter", 0, 0.5, "b" * 64)
    store.close()
    with pytest.raises(SubmissionError, match=r"holds 1 result\(s\) of a pruner named 'l1_over_l2_filter' computed by other code"):
        sub.submit(TEMPLATE, options(tmp_path, cache_dir=tmp_path / "cache"))
    assert recorder == [] and sub.read_index(tmp_path / "results.db")["submissions"] == {}


def test_workers_are_not_sandboxed_where_the_kernel_cannot(recorder: list[dict[str, Any]], kernel: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--sandbox (the default) on a kernel without user namespaces: the grid runs unsandboxed (with the warning), never asks for it."""
    monkeypatch.setattr(sub, "check_file", lambda path, opts, shown=None: dict(REPORT))
    warned: list[str] = []
    sub.submit(TEMPLATE, options(tmp_path, sandbox=True, warn=warned.append, cache_dir=tmp_path / "cache"))
    assert [c["sandbox"] for c in recorder] == [False, False]
    assert warned == [sub.NOT_ISOLATED]


# ---- cli/submit.py: what the command prints


def fake_submit(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> list[SubmitOptions]:
    """Replace submit(): return `outcome` (or raise it); returns the options it was given."""
    seen: list[SubmitOptions] = []

    def fake(path: Path, opts: SubmitOptions, progress: Any = None) -> SubmitResult:
        seen.append(opts)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr("harness.submission.submit.submit", fake)
    return seen


def invoke(tmp_path: Path, *extra: str) -> Any:
    """`harness submit my_pruner.py` against a tmp DB and site."""
    return CliRunner().invoke(app, ["submit", str(tmp_path / "my_pruner.py"), "--db", str(tmp_path / "r.db"), "--site-dir", str(tmp_path / "site"), *extra])


def test_ok_line_shows_the_measured_sparsity_and_a_dry_run_stops(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ok line gives measured then requested sparsity; with no summary it says nothing was recorded."""
    fake_submit(monkeypatch, SubmitResult("mine", "ab" * 32, REPORT | {"dry_run": {"architecture": "small_cnn", "sparsity_achieved": 0.4583, "sparsity_requested": 0.5}}))
    res = invoke(tmp_path, "--dry-run")
    out = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "ok: pruner mine by Bob (sha256 abababababab…) passed every check; dry run on small_cnn: sparsity 0.458 for 0.500 requested." in out
    assert "--dry-run: nothing recorded or run." in out


def test_run_summary_rows_and_failures_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Counts, one row per job (– for a missing number, accuracies in %), each failed job by key, and exit status 1."""
    summary = SimpleNamespace(total=4, done=2, cached=1, failed=[("job-key-1", "boom in eval")], seconds=3.5)
    rows = [{"dataset": "digits", "architecture": "small_cnn", "sparsity": 0.5, "seed": 0, "clean_acc": 0.75, "dense_clean_acc": 0.9},
            {"dataset": "digits", "architecture": "small_cnn", "sparsity": 0.5, "seed": 1, "clean_acc": None, "dense_clean_acc": None}]
    fake_submit(monkeypatch, SubmitResult("mine", "ab" * 32, REPORT, recorded="r.db (table submissions)", summary=summary, grid_file=Path("g.toml"), rows=rows))
    res = invoke(tmp_path)
    out = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "recorded r.db (table submissions); grid g.toml: 4 jobs, 2 run, 1 already done, 1 failed, 3.5 s." in out
    assert "digits/small_cnn sparsity 0.5 seed 0: clean 75.0% (dense 90.0%)" in out
    assert "digits/small_cnn sparsity 0.5 seed 1: clean – (dense –)" in out
    assert "job-key-1: boom in eval" in out


def test_refusal_text_with_brackets_is_printed_verbatim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A refusal quoting the user's code keeps its [brackets] (no markup), exit status 2."""
    fake_submit(monkeypatch, SubmissionError("x.py: raised KeyError during pruning: '[red]w[/red]'"))
    res = invoke(tmp_path)
    assert res.exit_code == 2
    assert "refused: x.py: raised KeyError during pruning: '[red]w[/red]'" in " ".join(res.output.split())


def test_ctrl_c_exits_130_naming_how_to_finish(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Interrupted: exit status 130 and the --replace hint."""
    fake_submit(monkeypatch, KeyboardInterrupt())
    res = invoke(tmp_path)
    assert res.exit_code == 130
    assert "interrupted (Ctrl-C)" in res.output and "with --replace to finish them" in " ".join(res.output.split())


def test_checking_status_names_the_file_and_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The transient status line names the file being checked, the time limit and the memory."""
    seen = fake_submit(monkeypatch, SubmissionError("x"))
    invoke(tmp_path, "--time-limit", "7", "--memory-mb", "99", "--no-sandbox")
    status: Any = seen[0].checking(Path("my_pruner.py"))  # type: ignore[misc]
    assert str(status.status) == "checking my_pruner.py in a separate process (time limit 7 s, memory 99 MiB, --no-sandbox)…"


def test_progress_prints_done_and_failed_jobs_only(capsys: pytest.CaptureFixture[str]) -> None:
    """One line per finished or failed job, none for a started one."""
    from harness.cli.submit import _progress

    job = SimpleNamespace(dataset="digits", architecture="small_cnn", pruner=SimpleNamespace(label="mine"), sparsity=0.5)
    for event in ("started", "done", "failed"):
        _progress(event, job, 1, 2)
    lines = [" ".join(line.split()) for line in capsys.readouterr().err.splitlines()]
    assert lines == ["done digits/small_cnn/mine@0.5", "failed digits/small_cnn/mine@0.5"]


def test_a_foreign_db_is_named_before_a_bad_file(tmp_path: Path) -> None:
    """The --db is refused first, even when the file is missing too: exit status 2, the DB's own message, the DB unchanged."""
    db = tmp_path / "r.db"
    foreign_db(db)
    before = db.read_bytes()
    res = invoke(tmp_path)  # tmp_path/my_pruner.py does not exist
    assert res.exit_code == 2
    assert "is an SQLite database of another program" in res.output and "no such file" not in res.output
    assert db.read_bytes() == before
