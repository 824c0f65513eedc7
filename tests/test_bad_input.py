"""Bad input gets one clear line (problem and fix), a non-zero exit, no traceback, and a database left byte for byte."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.api.errors import HarnessError
from harness.api.metrics import Metric
from harness.api.plugins import architectures
from harness.cli.main import app
from harness.store.session import Store

TEMPLATE = Path(__file__).resolve().parent.parent / "examples" / "my_pruner.py"

GRID = """
name = "tiny"
datasets = ["digits"]
architectures = ["small_cnn"]
pruners = ["none", "l1_filter"]
sparsities = [0.5]
seeds = [0]

[train]
epochs = 1
batch_size = 64
lr = 0.05
n_train = 200

[finetune]
epochs = 1

[eval]
n_examples = 50
batch_size = 50
measure_latency = false
sanity_examples = 0
reference = { linf = ["pgd_linf"] }

[[attacks]]
name = "fgsm"
eps = [0.1]

[[attacks]]
name = "pgd_linf"
eps = [0.1]
steps = 2
"""


def _digest(path: Path) -> str:
    """sha256 of the database file's bytes and of its SQL dump (which reads a write still sitting in the WAL)."""
    raw = path.read_bytes()
    con = sqlite3.connect(path)
    try:
        dump = "\n".join(con.iterdump()).encode()
    finally:
        con.close()
    return hashlib.sha256(raw).hexdigest() + hashlib.sha256(dump).hexdigest()


def _lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.strip()]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A results database holding one done job with a stored number, and one failed job."""
    path = tmp_path / "results.db"
    store = Store(path)
    run_id = store.start_run("tiny", "tiny.toml", 2, {})
    fields = {"dataset": "digits", "architecture": "small_cnn", "pruner": "none", "pruner_label": "none", "sparsity": 0.0, "seed": 0,
              "dense_key": "d" * 16, "pruned_key": "p" * 16, "params": {}}
    store.claim("a" * 16, run_id, fields)
    store.complete("a" * 16, [Metric("clean_acc", 0.9)], {}, 1.0)
    store.claim("b" * 16, run_id, fields | {"seed": 1})
    store.fail("b" * 16, "Traceback ...\nharness.api.errors.CheckpointError: [train] checkpoint 'x.pt': no such file or folder")
    store.finish_run(run_id, 1, 1, 0)
    store.close()
    return path


def _refused(args: list[str], db: Path, needles: list[str], code: int | None = None) -> str:
    """Run the command; assert a non-zero exit (or `code`), one line holding every needle, no traceback, `db` unchanged."""
    before = _digest(db)
    res = CliRunner().invoke(app, args)
    lines = _lines(res.output)
    assert res.exit_code != 0 if code is None else res.exit_code == code, res.output
    assert len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], (needle, res.output)
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)  # no exception escaped the CLI
    assert _digest(db) == before
    return lines[0]


def _dry_run(grid: Path, db: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--grid", str(grid), "--db", str(db), "--site-dir", str(tmp_path / "site"), "--device", "cpu", "--dry-run", *extra]


# ---- grid values: types and ranges of [train], [finetune], [eval], empty axes, non-finite numbers


BAD_VALUES = {
    "epochs not a number": (("epochs = 1\nbatch_size = 64", 'epochs = "ten"\nbatch_size = 64'), "[train]: epochs must be an integer >= 0, got 'ten'"),
    "negative epochs": (("epochs = 1\nbatch_size = 64", "epochs = -3\nbatch_size = 64"), "[train]: epochs must be an integer >= 0, got -3"),
    "negative fine-tune epochs": (("[finetune]\nepochs = 1", "[finetune]\nepochs = -1"), "[finetune]: epochs must be an integer >= 0, got -1"),
    "negative lr": (("lr = 0.05", "lr = -0.05"), "[train]: lr must be a number > 0, got -0.05"),
    "nan lr": (("lr = 0.05", "lr = nan"), "[train]: lr must be a number > 0, got nan"),
    "zero batch": (("batch_size = 64", "batch_size = 0"), "[train]: batch_size must be an integer >= 1, got 0"),
    "negative n_train": (("n_train = 200", "n_train = -5"), "[train]: n_train must be an integer >= 1, got -5"),
    "zero n_examples": (("n_examples = 50", "n_examples = 0"), "[eval]: n_examples must be an integer >= 1, got 0"),
    "zero eval batch": (("batch_size = 50", "batch_size = 0"), "[eval]: batch_size must be an integer >= 1, got 0"),
    "negative sanity_examples": (("sanity_examples = 0", "sanity_examples = -4"), "[eval]: sanity_examples must be an integer >= 0, got -4"),
    "latency not a bool": (("measure_latency = false", "measure_latency = 1"), "[eval]: measure_latency must be true or false, got 1"),
    "no pruners": (('pruners = ["none", "l1_filter"]', "pruners = []"), "'pruners' must be a non-empty list of names"),
    "no sparsities": (("sparsities = [0.5]", "sparsities = []"), "'sparsities' is empty, so 'l1_filter' would run nothing"),
    "nan L2 eps": (('reference = { linf = ["pgd_linf"] }', 'reference = { linf = ["pgd_linf"], l2 = ["pgd_l2"] }'), "eps must be >= 0 and finite, got nan"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_grid_value_is_one_line_and_keeps_the_db(case: str, db: Path, tmp_path: Path) -> None:
    (old, new), needle = BAD_VALUES[case]
    assert old in GRID
    text = GRID.replace(old, new, 1) + ('\n[[attacks]]\nname = "pgd_l2"\neps = [nan]\n' if case == "nan L2 eps" else "")
    grid = tmp_path / "bad.toml"
    grid.write_text(text)
    line = _refused(_dry_run(grid, db, tmp_path), db, [needle, str(grid)], code=1)
    assert line.startswith("error: grid ")


def test_grid_file_that_is_not_text_or_is_a_folder(db: Path, tmp_path: Path) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    _refused(_dry_run(binary, db, tmp_path), db, [str(binary), "not a text file (byte 0 is not UTF-8)"], code=1)
    folder = tmp_path / "grids.toml"
    folder.mkdir()
    _refused(_dry_run(folder, db, tmp_path), db, [str(folder), "is a folder", "TOML file"], code=1)


def test_grid_named_with_brackets_is_printed_as_text(db: Path, tmp_path: Path) -> None:
    """A grid's name is the user's text, never console markup: "[/tiny]" once crashed the dry run's summary."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace('name = "tiny"', 'name = "[/tiny]"'))
    before = _digest(db)
    res = CliRunner().invoke(app, _dry_run(grid, db, tmp_path))
    assert res.exit_code == 0, res.output
    assert "grid [/tiny] is valid" in " ".join(res.output.split())
    assert _digest(db) == before


# ---- [train] checkpoint values that only loading them reveals


def test_checkpoint_of_another_architecture_is_refused_before_any_job(db: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "resnet20.pt"
    torch.save(architectures.get("resnet20").obj(num_classes=10, in_channels=1).state_dict(), ckpt)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace("n_train = 200", f'n_train = 200\ncheckpoint = "{ckpt}"'))
    needles = [f"checkpoint {ckpt} is not a state dict for architecture 'small_cnn'", "name the architecture it was saved from"]
    _refused(_dry_run(grid, db, tmp_path), db, needles, code=1)
    # A real run is refused the same way: no job is created, none fails one by one.
    _refused(["run", "--grid", str(grid), "--db", str(db), "--site-dir", str(tmp_path / "site"), "--device", "cpu", "--workers", "0"], db, needles, code=1)
    assert not (tmp_path / "site").exists()


def test_checkpoint_holding_a_whole_model_is_refused(db: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    torch.save(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), ckpt)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace("n_train = 200", f'n_train = 200\ncheckpoint = "{ckpt}"'))
    _refused(_dry_run(grid, db, tmp_path), db, [f"checkpoint {ckpt}: not a plain state dict", "torch.save(model.state_dict(), path)"], code=1)


def test_robustbench_checkpoint_without_robustbench(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    (models / "cifar10" / "Linf").mkdir(parents=True)
    (models / "cifar10" / "Linf" / "Standard.pt").write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "robustbench", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace("n_train = 200", f'n_train = 200\ncheckpoint = "robustbench:cifar10/Linf/Standard"\nmodel_dir = "{models}"'))
    _refused(_dry_run(grid, db, tmp_path), db, ["checkpoint 'robustbench:...' needs robustbench", "pip install 'harness[robustbench]'"], code=1)


# ---- run options and output places


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--workers", "-1"], "--workers -1: pass 1 or more worker processes, or 0"),
        (["--retries", "-1"], "--retries -1: pass 0 or more retries"),
        (["--timeout", "0"], "--timeout 0: pass a time limit in seconds > 0"),
        (["--executor", "slurm"], "Unknown executor 'slurm'; use local or ray"),
    ],
)
def test_bad_run_option_is_one_line(extra: list[str], needle: str, db: Path, tmp_path: Path) -> None:
    """A dry run checks the options a run would use: these were once accepted by it (and --workers -1 by a run)."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    _refused(_dry_run(grid, db, tmp_path, *extra), db, [needle], code=1)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download is tried: a missing dataset is reported at once, without touching the network."""
    monkeypatch.setattr("harness.datasets.files.online", lambda *args, **kwargs: False)


def test_missing_dataset_on_a_real_run_is_one_line(db: Path, tmp_path: Path, offline: None) -> None:
    """The progress bar starts with the first job, so an error before it is the only line."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace('datasets = ["digits"]', 'datasets = ["cifar10"]'))
    args = ["run", "--grid", str(grid), "--db", str(db), "--site-dir", str(tmp_path / "site"), "--device", "cpu", "--workers", "0",
            "--data-dir", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path / "cache")]
    _refused(args, db, ["cifar10: not found", "pass --data-dir DIR"], code=1)


def test_file_where_a_folder_goes_is_refused_before_the_run(db: Path, tmp_path: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    base = ["run", "--grid", str(grid), "--device", "cpu", "--workers", "0"]
    _refused(base + ["--db", str(db), "--site-dir", str(afile)], db, [f"--site-dir {afile}: {afile} is a file, not a folder"], code=1)
    _refused(base + ["--db", str(db), "--cache-dir", str(afile / "cache")], db, [f"--cache-dir {afile / 'cache'}: {afile} is a file"], code=1)
    _refused(base + ["--db", str(afile / "results.db"), "--site-dir", str(tmp_path / "site")], db, [f"--db {afile / 'results.db'}: {afile} is a file"], code=1)
    _refused(["site", "--db", str(db), "--site-dir", str(afile / "site")], db, [f"--site-dir {afile / 'site'}: {afile} is a file"], code=1)
    assert afile.read_text() == "not a folder" and not (tmp_path / "site").exists()


def test_store_in_a_place_it_cannot_be_created(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(HarnessError, match="cannot create the results database .*; pass --db PATH in a folder you can write"):
        Store(afile / "results.db")
    dangling = tmp_path / "link.db"
    dangling.symlink_to(tmp_path / "no" / "such" / "folder" / "results.db")  # SQLite cannot open it
    with pytest.raises(HarnessError, match=r"cannot write the results database .*link\.db \(unable to open database file\)"):
        Store(dangling)


# ---- usage errors and messages holding brackets


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "--workers", "abc"], ["error: Invalid value for '--workers'", "see `", "run --help`"]),
        (["list", "bogus"], ["'bogus' is not one of 'pruners'", "list --help`"]),
        (["results", "--format", "xml"], ["'xml' is not one of 'table', 'csv', 'json'", "results --help`"]),
        (["frobnicate"], ["No such command 'frobnicate'"]),
        (["db", "forget-pending", "--run", "abc"], ["Invalid value for '--run'", "db forget-pending --help`"]),
        (["submit"], ["pass your pruner file, e.g. `harness submit my_pruner.py`", "submit --help`"]),
    ],
)
def test_usage_error_is_one_line(args: list[str], needles: list[str], db: Path) -> None:
    _refused(args + (["--db", str(db)] if args[0] in ("results", "db") else []), db, needles, code=2)


def test_messages_with_brackets_are_text_not_markup(db: Path, tmp_path: Path) -> None:
    toml_db = tmp_path / "grid.db"
    toml_db.write_text("[/train]\nepochs = 1\n")
    before = toml_db.read_bytes()
    _refused(["db", "version", "--db", str(toml_db)], db, [f"{toml_db} is not an SQLite database (it starts with b'[/train]"], code=2)
    assert toml_db.read_bytes() == before
    res = CliRunner().invoke(app, ["status", "--db", str(db)])
    assert res.exit_code == 0 and "[train] checkpoint 'x.pt': no such file" in res.output, res.output
    _refused(["db", "version", "--db", str(tmp_path / "nope.db")], db, [f"No results database at {tmp_path / 'nope.db'}; pass --db PATH"], code=1)


def test_robustbench_imports_without_a_warning_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """robustbench 1.1 imports the deprecated pkg_resources; its warning would be a stray line beside any message."""
    import importlib.util
    import warnings

    from harness.engine import zoo

    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench is not installed")
    for name in [m for m in sys.modules if m.split(".")[0] in ("robustbench", "pkg_resources")]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh below, as in a new process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert callable(zoo.robustbench_load_model())
    assert not [w for w in caught if "pkg_resources" in str(w.message)], [str(w.message) for w in caught]


# ---- harness submit


def _submit(file: Path, db: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["submit", str(file), "--db", str(db), "--site-dir", str(tmp_path / "site"), "--time-limit", "120", "--memory-mb", "1024", *extra]


def test_submission_refusals_before_the_check_are_one_line(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pruner.py"
    folder.mkdir()
    _refused(_submit(folder, db, tmp_path), db, [f"refused: {folder}: a folder; pass the path of your pruner file"], code=2)
    _refused(_submit(TEMPLATE, db, tmp_path, "--time-limit", "-1"), db, ["--time-limit -1: pass the seconds the check may take"], code=2)
    _refused(_submit(TEMPLATE, db, tmp_path, "--memory-mb", "0"), db, ["--memory-mb 0: pass the MiB the submission may allocate"], code=2)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    _refused(_submit(TEMPLATE, db, tmp_path, "--grid", str(binary)), db, [f"{binary}: not a text file"], code=1)
    syntax = tmp_path / "syntax.py"
    syntax.write_text(TEMPLATE.read_text().replace("flat = weight.flatten(1)", "flat = weight.flatten(1"))
    _refused(_submit(syntax, db, tmp_path), db, [f"refused: {syntax}: syntax error at line"], code=2)
    assert not (tmp_path / "site").exists()


def test_submission_that_raises_is_one_line_with_its_frames(db: Path, tmp_path: Path) -> None:
    raises = tmp_path / "raises.py"
    text = TEMPLATE.read_text().replace("        flat = weight.flatten(1)\n", "        flat = helper(weight)\n")
    raises.write_text(text + "\n\ndef helper(w):\n    return w.missing_method()\n")
    needles = ["raised AttributeError during pruning", "'missing_method'", "(submission frames only: line", "in helper: return w.missing_method()"]
    _refused(_submit(raises, db, tmp_path, "--dry-run"), db, needles, code=2)


def test_submission_whose_error_spans_lines_is_one_line(db: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text('raise ImportError("cannot load the weights\\nfrom the second line")\n' + TEMPLATE.read_text())
    needles = ["import error: cannot load the weights from the second line", "(submission frames only: line 1 in <module>"]
    _refused(_submit(broken, db, tmp_path, "--dry-run"), db, needles, code=2)


@pytest.mark.parametrize(
    ("change", "extra", "needle"),
    [
        (("seeds = [0]", "seeds = [0]\ncolour = 'red'"), [], "unknown key 'colour'"),
        (('datasets = ["digits"]', 'datasets = ["cifar10"]'), ["--data-dir", "NOWHERE"], "cifar10: not found"),
    ],
)
def test_submission_on_a_bad_grid_records_nothing(
    change: tuple[str, str], extra: list[str], needle: str, db: Path, tmp_path: Path, offline: None
) -> None:
    """The grid's contents and datasets are checked before the file is recorded: the database keeps every byte."""
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace(*change))
    extra = [str(tmp_path / "nowhere") if e == "NOWHERE" else e for e in extra]
    _refused(_submit(TEMPLATE, db, tmp_path, "--grid", str(grid), *extra), db, [needle], code=1)
    assert not (tmp_path / "site").exists()
