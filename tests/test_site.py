"""The static site: pages, links, downloads, escaping of hostile names, SVG charts, reproducible job grids."""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import tomllib
from test_queries import add_job, linf

from harness.api.metrics import Metric
from harness.engine.grid import load_grid, parse_grid
from harness.site import plots
from harness.site.build import build_site, reproduce_grid, slug
from harness.store.models import Base
from harness.store.queries import job_records
from harness.store.session import Store

EVIL = "<script>alert(1)</script>"
EVIL_DOC = '<b>bold</b><img src=x onerror="alert(2)">'
REPO = Path(__file__).resolve().parent.parent


def hostile_store(path: Path) -> Store:
    """A small store whose names and descriptions carry HTML, beside ordinary jobs."""
    store = Store(path)
    add_job(store, "n0", "none", 0.0, 0, linf(0.9, (0.4, 0.2)))
    add_job(store, "n1", "none", 0.0, 1, linf(0.92, (0.42, 0.2)))
    add_job(store, "a0", "l1_filter", 0.5, 0, linf(0.88, (0.5, 0.3), 0.5))
    add_job(store, "a1", "l1_filter", 0.5, 1, linf(0.89, (0.48, 0.28), 0.5))
    prov = {"plugins": {"pruner": {"name": EVIL, "description": EVIL_DOC, "paper": "<i>Paper</i>", "sha256": "abc"}}}
    add_job(store, "evil0", EVIL, 0.3, 0, linf(0.8, (0.3, 0.1), 0.7, {"gradient_masking": 1.0}), label=EVIL, arch="a", provenance=prov)
    return store


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once from the hostile store."""
    tmp = tmp_path_factory.mktemp("site")
    index = build_site(hostile_store(tmp / "r.db"), tmp / "site")
    return index.parent


class Links(HTMLParser):
    """Collects href/src attributes and whether any <script> has inline content."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("href", "src") and v]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text())
    return p


def test_every_page_and_download_is_written(site: Path) -> None:
    for name in ("index.html", "schema.html", "results.csv", "results.json", "jobs.json", "leaderboard.csv", "assets/site.css", "assets/site.js"):
        assert (site / name).is_file(), name
    assert sorted(p.name for p in (site / "pruners").iterdir()) == sorted(f"{slug(n)}.html" for n in ("none", "l1_filter", EVIL))
    assert len(list((site / "jobs").iterdir())) == 5


def test_every_local_link_resolves_and_nothing_is_fetched_remotely(site: Path) -> None:
    pages = [site / "index.html", site / "schema.html", *sorted((site / "pruners").iterdir()), *sorted((site / "jobs").iterdir())]
    for page in pages:
        for link in parse(page).links:
            if link.startswith(("data:", "#")):
                continue
            assert "://" not in link and not link.startswith("//"), f"{page.name} links outside the site: {link}"
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.is_file(), f"{page.name}: broken link {link}"


def test_hostile_names_render_as_text(site: Path) -> None:
    pages = [site / "index.html", *(site / "pruners").iterdir(), *(site / "jobs").iterdir(), *(site / "architectures").iterdir()]
    for page in pages:
        html = page.read_text()
        assert EVIL not in html and "<img src=x" not in html and "<i>Paper" not in html, page.name
        assert not parse(page).inline_scripts, page.name
    index = (site / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    evil_page = (site / "pruners" / f"{slug(EVIL)}.html").read_text()
    assert "&lt;b&gt;bold&lt;/b&gt;" in evil_page  # the description shows its tags as text


def test_slug_is_safe_and_stable() -> None:
    assert slug("l1_filter") == "l1_filter"
    s = slug(EVIL)
    assert re.fullmatch(r"[a-z0-9_-]+", s) and s == slug(EVIL) and s != slug("<script>alert(2)</script>")
    assert "/" not in slug("../../etc/passwd") and slug("..") != ".."


def test_index_has_boards_rows_and_charts(site: Path) -> None:
    html = (site / "index.html").read_text()
    assert html.count('<table class="board">') == 1  # one dataset, one threat model
    assert html.count("<svg class=\"chart\"") >= 2  # robust accuracy vs cost (two sparsities) and the robustness curve
    assert "jobs/a0.html" in html and "jobs/a1.html" in html  # both seeds of the row link to their jobs
    assert "⚠ gradient_masking 1/1" in html


def test_downloads_hold_every_number(site: Path) -> None:
    rows = list(csv.DictReader((site / "results.csv").open()))
    data = json.loads((site / "results.json").read_text())
    assert len(rows) == len(data) and {r["job_key"] for r in rows} == {"n0", "n1", "a0", "a1", "evil0"}
    a0 = {(r["metric"], r["attack"], r["eps"]): float(r["value"]) for r in rows if r["job_key"] == "a0"}
    assert a0[("robust_acc", "fgsm", "0.1")] == 0.5 and a0[("clean_acc", "", "")] == 0.88
    board = list(csv.DictReader((site / "leaderboard.csv").open()))
    l1 = next(r for r in board if r["pruner"] == "l1_filter")
    assert l1["seeds"] == "0 1" and float(l1["delta_worst_case@0.1"]) == pytest.approx(0.08)
    assert float(l1["delta_worst_case@0.1_ci95"]) > 0


def test_schema_doc_names_every_column() -> None:
    doc = (REPO / "docs" / "schema.md").read_text()
    missing = [f"{t.name}.{c.name}" for t in Base.metadata.sorted_tables for c in t.columns if f"`{c.name}`" not in doc]
    assert not missing, f"docs/schema.md does not describe {missing}; add them there"


def test_reproduce_grid_yields_the_same_job(store: Store, tiny_grid: Path) -> None:
    for spec in load_grid(str(tiny_grid)).jobs:
        metrics = [Metric("clean_acc", 0.9)]
        add_job(store, spec.key, spec.pruner.name, spec.sparsity, spec.seed, metrics,
                dataset=spec.dataset, arch=spec.architecture, label=spec.pruner.label, params=spec.params(), dense_key=spec.dense_key)
    with store.session() as s:
        records = job_records(s)
    for rec in records:
        grid = parse_grid(tomllib.loads(reproduce_grid(rec)))
        assert [j.key for j in grid.jobs] == [rec.key]


def test_pareto_front_and_ticks() -> None:
    pts = [(0.9, 0.1), (0.8, 0.3), (0.85, 0.2), (0.7, 0.25), (0.9, 0.05)]
    assert plots.pareto_front(pts) == [(0.8, 0.3), (0.85, 0.2), (0.9, 0.1)]
    assert plots.nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert plots.nice_ticks(0.12, 0.31)[0] >= 0.12


def test_chart_escapes_text_and_draws_every_point() -> None:
    chart = plots.Chart(EVIL, "x", "y", [plots.Series(EVIL, [(0.1, 0.5, 0.05), (0.2, 0.4, None)])], [plots.HLine(0.6, "dense")])
    svg = plots.render(chart)
    assert EVIL not in svg and "&lt;script&gt;" in svg
    assert svg.count("<circle") == 2 and svg.count('class="c-err"') == 1 and 'class="c-base"' in svg


# ---------------------------------------------------------------- a clean first command


def _fresh_clone(tmp: Path) -> Path:
    """A git clone of this checkout's committed state (what a newcomer gets)."""
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, capture_output=True)
    return clone


def _harness_run(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(clone)}  # the clone's code, not the editable install's
    return subprocess.run([sys.executable, "-m", "harness", "run", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)


def test_cli_defaults_point_to_git_ignored_paths() -> None:
    from harness.cli.main import DEFAULT_DB, DEFAULT_SITE, run
    from harness.cli.submit import submit

    defaults = [DEFAULT_DB, DEFAULT_SITE, Path(".harness/results.db") / "../cache/x"]
    for fn in (run, submit):
        sig = inspect.signature(fn)
        defaults += [sig.parameters["db"].default, sig.parameters["site_dir"].default]
    for path in defaults:
        probe = str(path / "index.html") if path.suffix == "" else str(path)
        res = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=REPO)
        assert res.returncode == 0, f"{probe} is not git-ignored: a first run would change tracked files"
    assert not {Path("results.db"), Path("site")} & set(defaults)  # the published board is never a default


@pytest.mark.slow  # about 100 s on 2 shared cores: a clone, then a real (tiny) run
def test_first_run_in_a_fresh_clone_leaves_git_status_clean(tmp_path: Path, tiny_grid: Path) -> None:
    clone = _fresh_clone(tmp_path)
    res = _harness_run(clone, "--grid", str(tiny_grid), "--device", "cpu")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (clone / ".harness" / "site" / "index.html").is_file() and (clone / ".harness" / "results.db").is_file()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"`harness run` changed the checkout:\n{status.stdout}"


@pytest.mark.slow
def test_readme_first_command_leaves_git_status_clean(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    assert "pip install -e '.[dev]' && harness run  " in readme  # the command this test runs (its `harness run` part)
    clone = _fresh_clone(tmp_path)
    res = _harness_run(clone)
    assert res.returncode == 0, res.stderr[-2000:]
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"the README's first command changed the checkout:\n{status.stdout}"
