"""`harness submit`: good files pass, each kind of bad file is refused with its own message and exit code 2, nothing written."""

from __future__ import annotations

import hashlib
import socket
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import harness
from harness.api.errors import SubmissionError
from harness.cli.main import app
from harness.scheduling.isolation import sandbox_available
from harness.submission.submit import SubmitOptions, check_file, read_index, submit

TEMPLATE = Path(__file__).resolve().parent.parent / "examples" / "my_pruner.py"

HEAD = """
import torch
from torch import Tensor, nn
from harness import register_pruner
from harness.pruning import ScoredFilterPruner
"""


def scored(body: str, name: str = "sub_pruner", extra: str = "", meta: str = 'author="Ada"') -> str:
    """A ScoredFilterPruner submission whose `score` body is `body`."""
    return HEAD + extra + textwrap.dedent(f'''
@register_pruner("{name}", {meta})
class Sub(ScoredFilterPruner):
    """A test pruner."""

    def score(self, weight: Tensor) -> Tensor:
        """Per-filter score."""
''') + textwrap.indent(textwrap.dedent(body), " " * 8)


L1 = "return weight.abs().flatten(1).sum(1)\n"

# name -> (source, the words the refusal must contain)
BAD: dict[str, tuple[str, list[str]]] = {
    "syntax": (scored(L1).replace("def score(self, weight: Tensor) -> Tensor:", "def score(self, weight: Tensor) -> Tensor"), ["syntax error", "line"]),
    "import": (scored(L1, extra="import no_such_pruning_lib\n"), ["import error", "'no_such_pruning_lib'", "not installed"]),
    "none_registered": (HEAD + "class Sub(ScoredFilterPruner):\n    def score(self, weight):\n        return weight.sum((1, 2, 3))\n", ["no pruner registered"]),
    "two_registered": (scored(L1) + scored(L1, name="sub_pruner_two").replace(HEAD, ""), ["registers 2 pruners", "sub_pruner", "sub_pruner_two"]),
    "signature": (scored(L1).replace("def score(self, weight: Tensor)", "def score(self, weight: Tensor, scale: float)"), ["wrong signature", "score(self, weight: Tensor) -> Tensor"]),
    "not_implemented": (scored(L1).replace("def score(", "def scores("), ["wrong signature", "does not implement score"]),
    "builtin_name": (scored(L1, name="l1_filter"), ["registration refused", "'l1_filter' is already registered"]),
    "raises": (scored("return helper(weight)\n", extra="\ndef helper(w):\n    return w.missing_method()\n"), ["raised AttributeError during pruning", "submission frames only", "in helper", "missing_method"]),
    "wrong_type": (scored(L1) + "\n    def prune(self, model, sparsity, ctx):\n        super().prune(model, sparsity, ctx)\n        return {'model': model}\n", ["prune returned dict", "torch.nn.Module"]),
    "output_shape": (scored(L1) + "\n    def prune(self, model, sparsity, ctx):\n        model = super().prune(model, sparsity, ctx)\n        model.net[-1] = nn.Linear(model.net[-1].in_features, 3)\n        return model\n", ["changes the output shape", "(16, 10)", "(16, 3)"]),
    "prunes_less": (scored(L1) + "\n    def prune(self, model, sparsity, ctx):\n        return super().prune(model, sparsity / 2, ctx)\n", ["prunes less than asked", "0.2500", "0.5000"]),
    "prunes_more": (scored(L1) + "\n    def prune(self, model, sparsity, ctx):\n        return super().prune(model, 0.9, ctx)\n\n    def achieved_sparsity(self, dense, pruned):\n        return 0.5\n", ["prunes more than asked", "0.9"]),
    "nondeterministic": (scored("return weight.abs().flatten(1).sum(1) * torch.tensor([random.random() for _ in range(weight.shape[0])])\n", extra="import random\n"), ["non-deterministic", "ctx.seed"]),
    "writes_db": (scored(L1) + "\n    def prune(self, model, sparsity, ctx):\n        try:\n            import sqlite3\n            sqlite3.connect(DB).execute('DELETE FROM results')\n        except Exception:\n            pass\n        return super().prune(model, sparsity, ctx)\n", ["tries to open the results database", "refused"]),
    "memory": (scored("big = torch.ones(2 ** 30)  # 4 GiB of float32\nreturn weight.abs().flatten(1).sum(1) + big[0]\n"), ["allocates past the memory limit"]),
    "timeout": (scored("import time\ntime.sleep(3600)\nreturn weight.sum((1, 2, 3))\n"), ["runs past the time limit"]),
    "exits": (scored(L1, extra="import os\nos._exit(3)\n"), ["the check process exited with code 3"]),
    "no_author": (scored(L1, meta='paper="x"'), ["has no author", "author="]),
}


@pytest.fixture
def where(tmp_path: Path) -> dict[str, Path]:
    """A tmp results DB (with one byte-checked run row), the checkout's registry folder and a site folder."""
    from harness.store.session import Store

    db = tmp_path / "results.db"
    store = Store(db)
    store.start_run("g", "g.toml", 0, {})
    store.close()
    subs = Path(__file__).resolve().parent.parent / "registry"
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("old site")
    return {"db": db, "subs": subs, "site": site, "tmp": tmp_path}


def _opts(where: dict[str, Path], **kw: object) -> SubmitOptions:
    base = {"db": where["db"], "site_dir": where["site"], "time_limit_s": 120.0, "memory_mb": 1024}
    return SubmitOptions(**(base | kw))  # type: ignore[arg-type]


def _record(db: Path, name: str, sha: str, author: str) -> None:
    """Record a submission row as an earlier `harness submit` would have."""
    from harness.store.session import Store

    store = Store(db)
    store.record_submission({"name": name, "sha256": sha, "source": b"# earlier\n", "original_filename": f"{name}.py", "author": author,
                             "description": "earlier", "family": "filter", "class_name": "X", "harness_version": "0"})
    store.close()


def _snapshot(where: dict[str, Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for d in ("subs", "site") for p in sorted(where[d].rglob("*")) if p.is_file()} | {
        "db": hashlib.sha256(where["db"].read_bytes()).hexdigest()
    }


@pytest.mark.parametrize("case", list(BAD))
def test_bad_submission_is_refused_with_its_message(case: str, where: dict[str, Path]) -> None:
    """Each broken rule: exit code 2, a message naming it, and the DB, site and registry untouched."""
    source, words = BAD[case]
    path = where["tmp"] / "my_pruner.py"
    path.write_text(source.replace("DB", repr(str(where["db"]))) if case == "writes_db" else source)
    before = _snapshot(where)
    limits = {"time_limit_s": 3.0} if case == "timeout" else {}
    args = ["submit", str(path), "--db", str(where["db"]), "--site-dir", str(where["site"]), "--memory-mb", "1024"]
    args += ["--time-limit", str(limits.get("time_limit_s", 120))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())  # rich wraps long lines
    for w in words:
        assert w in message, f"{case}: {w!r} not in {message!r}"
    assert _snapshot(where) == before
    assert read_index(where["db"])["submissions"] == {}


def test_template_passes_every_check(where: dict[str, Path]) -> None:
    """The documented template is a valid submission; the harness measures its sparsity itself."""
    report = check_file(TEMPLATE, _opts(where))
    assert report["ok"] and report["name"] == "l1_over_l2_filter" and report["family"] == "filter"
    dry = report["dry_run"]
    assert abs(dry["sparsity_achieved"] - 0.5) <= dry["tolerance"]


def test_template_command_prints_the_example() -> None:
    """`harness submit --template` prints the example file verbatim."""
    res = CliRunner().invoke(app, ["submit", "--template"])
    assert res.exit_code == 0 and res.output == TEMPLATE.read_text()


def test_dry_run_records_nothing(where: dict[str, Path]) -> None:
    """--dry-run stops after the checks: no registry entry, DB and site unchanged."""
    before = _snapshot(where)
    res = CliRunner().invoke(app, ["submit", str(TEMPLATE), "--dry-run", "--db", str(where["db"]), "--site-dir", str(where["site"])])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "passed every check" in out and "nothing recorded" in out
    assert _snapshot(where) == before


def test_taken_name_and_replace_by_author_only(where: dict[str, Path]) -> None:
    """A recorded name is refused; --replace works only with the same author."""
    _record(where["db"], "l1_over_l2_filter", "0" * 64, "Someone Else")
    with pytest.raises(SubmissionError, match="is taken by the submission of 'Someone Else'"):
        submit(TEMPLATE, _opts(where, dry_run=True))
    with pytest.raises(SubmissionError, match="only the author may replace"):
        submit(TEMPLATE, _opts(where, dry_run=True, replace=True))


def test_sibling_registry_folder_is_never_walked_by_builtins() -> None:
    """registry/submissions has no __init__.py, so the built-in loader never imports recorded submissions."""
    import pkgutil

    import registry

    names = [m.name for m in pkgutil.walk_packages(registry.__path__, prefix="registry.")]
    assert not any(n.startswith("registry.submissions") for n in names)


@pytest.mark.skipif(not sandbox_available(), reason="unprivileged user namespaces are not available here")
def test_sandbox_holds_against_code_that_bypasses_python(where: dict[str, Path]) -> None:
    """Sandboxed (the default), a write through a child process and a raw connect fail at the kernel; --no-sandbox shows they would not."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    target = where["tmp"] / "planted.txt"
    # A shell child and ctypes are invisible to Python's audit hooks: only the kernel sandbox stops them.
    probe = f"""
import ctypes, subprocess, struct
subprocess.run(["sh", "-c", "echo x > {target}"], capture_output=True)
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(2, 1, 0)
addr = struct.pack("=HH4s8x", 2, __import__("socket").htons({port}), bytes([127, 0, 0, 1]))
libc.connect(fd, addr, len(addr))
"""
    path = where["tmp"] / "probe.py"
    path.write_text(scored(L1, name="sandbox_probe", extra=probe))
    try:
        server.settimeout(0.5)
        check_file(path, _opts(where))
        assert not target.exists()
        with pytest.raises(socket.timeout):
            server.accept()
        check_file(path, _opts(where, sandbox=False))
        assert target.exists()  # without the sandbox the same probe gets through, so the check above is not vacuous
        server.accept()[0].close()
    finally:
        server.close()


def test_identical_file_is_refused_as_duplicate(where: dict[str, Path]) -> None:
    """A file whose sha256 is already recorded is refused before any process starts, whatever its name."""
    sha = hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()
    _record(where["db"], "earlier_name", sha, "Ada")
    before = _snapshot(where)
    res = CliRunner().invoke(app, ["submit", str(TEMPLATE), "--db", str(where["db"]), "--site-dir", str(where["site"])])
    assert res.exit_code == 2
    assert "duplicate" in res.output and "'earlier_name'" in res.output
    assert _snapshot(where) == before


HOSTILE = scored(L1, name="hostile_l1", meta='author="<img src=x onerror=alert(1)>", paper="<script>alert(2)</script>"').replace(
    '"""A test pruner."""', '"""<script>alert(3)</script> L1 norm of each filter."""'
)


@pytest.mark.slow
def test_submit_goes_from_file_to_leaderboard_row(where: dict[str, Path], tiny_grid: Path) -> None:
    """One command: checked, recorded with its sha256, run in workers on a grid, on the site (escaped); a resubmit is a duplicate."""
    from harness.store.queries import job_records, submission_records, submission_source
    from harness.store.session import Store

    where["db"].unlink()  # a real results DB this time
    path = where["tmp"] / "hostile.py"
    path.write_text(HOSTILE)
    args = ["submit", str(path), "--grid", str(tiny_grid), "--db", str(where["db"]), "--site-dir", str(where["site"])]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    entry = read_index(where["db"])["submissions"]["hostile_l1"]
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with Store(where["db"], readonly=True).session() as s:
        assert submission_source(s, "hostile_l1") == path.read_bytes()
        record = {r.name: r for r in submission_records(s)}["hostile_l1"]
    assert entry["author"] == "<img src=x onerror=alert(1)>" and record.harness_version == harness.__version__
    with Store(where["db"], readonly=True).session() as s:
        jobs = {j.pruner: j for j in job_records(s)}
    assert set(jobs) == {"none", "dense_finetuned", "hostile_l1"}
    assert jobs["hostile_l1"].get("clean_acc") is not None
    # The worker, not the driver, imported the submission: provenance names the recorded file.
    assert jobs["hostile_l1"].provenance["plugins"]["pruner"]["sha256"] == entry["sha256"]
    pages = "".join(p.read_text() for p in where["site"].rglob("*.html"))
    assert "hostile_l1" in (where["site"] / "index.html").read_text()
    assert "<script>alert(" not in pages and "<img src=x" not in pages
    assert "&lt;script&gt;alert(3)" in pages
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "duplicate" in again.output


GOOD_FAMILIES = {
    "layer": '''
import torch
from harness import register_pruner
from harness.pruning import LayerPruner


@register_pruner("sub_layer_l1", author="Ada")
class SubLayer(LayerPruner):
    """Removes the residual blocks with the smallest total |w|."""

    def block_scores(self, model, blocks, ctx):
        """Sum of |w| over each block's parameters."""
        return torch.stack([sum(p.abs().sum() for p in b.module.parameters()) for b in blocks])
''',
    "unstructured": '''
from harness import register_pruner
from harness.pruning import UnstructuredPruner


@register_pruner("sub_magnitude", author="Ada")
class SubMagnitude(UnstructuredPruner):
    """Zeroes the smallest weights, layer by layer."""
''',
}


@pytest.mark.parametrize("family", list(GOOD_FAMILIES))
def test_other_families_dry_run_on_a_fitting_model(family: str, where: dict[str, Path]) -> None:
    """Layer pruners are dry-run on a residual net, unstructured ones measured in zeroed weights."""
    path = where["tmp"] / f"{family}.py"
    path.write_text(GOOD_FAMILIES[family])
    report = check_file(path, _opts(where))
    dry = report["dry_run"]
    assert report["family"] == family
    assert dry["architecture"] == ("resnet20" if family == "layer" else "small_cnn")
    assert abs(dry["sparsity_achieved"] - 0.5) <= dry["tolerance"] + 1e-9


VANDAL = '''
import os, socket
from pathlib import Path

ROOTS = ROOTS_HERE
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
except OSError:
    pass
for root in [os.getcwd(), os.environ.get("HOME", ""), *ROOTS]:
    for pattern in ("*.db", "*.json", "*.py"):
        for p in Path(root).rglob(pattern):
            try:
                with open(p, "ab") as fh:
                    fh.write(b"!")
            except OSError:
                pass
'''


@pytest.mark.parametrize("sandbox", [True, False])
def test_submission_that_vandalises_files_and_opens_a_socket_is_refused_and_changes_nothing(
    sandbox: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appending to every *.db, *.json, *.py under the working directory, the DB's folder and $HOME, plus a socket: refused, every file identical."""
    from harness.store.session import Store

    if sandbox and not sandbox_available():
        pytest.skip("unprivileged user namespaces are not available here")
    work, data, home = tmp_path / "work", tmp_path / "data", tmp_path / "home"
    for d in (work, data, home / ".config"):
        d.mkdir(parents=True)
    db = data / "results.db"
    store = Store(db)
    store.start_run("g", "g.toml", 0, {})
    store.close()
    (data / "published-copy.db").write_bytes(db.read_bytes())
    (data / "notes.json").write_text('{"a": 1}')
    (work / "analysis.py").write_text("print(1)\n")
    (work / "scratch.db").write_bytes(db.read_bytes())
    (home / ".config" / "settings.json").write_text("{}")
    (home / "tool.py").write_text("x = 1\n")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    source = scored(L1, name="vandal", extra=VANDAL.replace("ROOTS_HERE", repr([str(work), str(data), str(home)])).replace("PORT", str(server.getsockname()[1])))
    path = work / "vandal.py"
    path.write_text(source)
    roots = (work, data, home, Path(__file__).resolve().parent.parent / "registry")

    def snapshot() -> dict[str, str]:
        # SQLite's -wal/-shm side files appear beside a WAL database whenever anything reads it; the files themselves must not change.
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for r in roots for p in sorted(r.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(("-wal", "-shm"))}

    before = snapshot()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    args = ["submit", str(path), "--db", str(db), "--site-dir", str(tmp_path / "site")] + ([] if sandbox else ["--no-sandbox"])
    try:
        res = CliRunner().invoke(app, args)
        with pytest.raises(socket.timeout):
            server.accept()  # nothing connected
    finally:
        server.close()
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert "refused" in message and "network access" in message and "private working folder" in message, message
    assert snapshot() == before
    assert not (tmp_path / "site").exists()
