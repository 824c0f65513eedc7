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
import torch

from harness.api.config import PROTOCOL_VERSION
from harness.api.metrics import Metric, pack_outcomes
from harness.engine.grid import load_grid, parse_grid
from harness.site import plots
from harness.site.build import build_site, reproduce_grid
from harness.site.formatting import slug
from harness.store.models import Base
from harness.store.queries import job_records
from harness.store.session import Store
from tests.test_boards import add_job, linf

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
    assert [plots.step_digits(s) for s in (20, 2.5, 0.25, 0.1)] == [0, 1, 2, 1]


def test_small_changes_get_distinct_tick_labels() -> None:
    # Changes under one point (e.g. robust accuracy near 0 at 8/255): ticks 0.25 points apart must not all read "-0".
    svg = plots.render_dots("t", "points", [plots.Dot("a", -0.007, None, [-0.004, -0.01])])
    labels = re.findall(r'<text class="c-tick"[^>]*text-anchor="middle">([^<]+)</text>', svg)
    assert len(labels) == len(set(labels)) >= 3, labels
    assert "-0" not in labels


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


# ---------------------------------------------------------------- what the board says

E1, E8 = 1 / 255, 8 / 255


def aa_params(seed: int, pruner: str, sparsity: float) -> dict[str, object]:
    """Parameters of a job attacked by FGSM at 1/255 and 8/255 and by AutoAttack at 8/255 only."""
    from tests.test_boards import job_params

    p = job_params("cifar10", "resnet20", seed, pruner, sparsity, n_examples=300)
    p["attacks"] = [{"name": "fgsm", "eps": [E1, E8], "params": {}}, {"name": "autoattack", "eps": [E8], "params": {}}]
    p["pruned"]["dense"]["train"] = {"epochs": 8, "n_train": 5000, "regime": "standard"}
    p["protocol"] = PROTOCOL_VERSION
    return p


def outcomes(acc: float, n: int = 300) -> dict[str, object]:
    """Per-example outcomes of an accuracy on n images: the first round(acc * n) correct (nested, so pairs are one-sided)."""
    mask = torch.arange(n) < round(acc * n)
    data, count = pack_outcomes(mask)
    return {"outcomes": data, "n_examples": count}


def aa(clean: float, r1: float, r8: float) -> list[Metric]:
    """Metrics with FGSM at 1/255 and 8/255 and AutoAttack at 8/255; the worst case is the minimum per eps."""
    return [
        Metric("clean_acc", clean), Metric("clean_acc_eval", clean, **outcomes(clean)), Metric("params_ratio", 0.5), Metric("macs_ratio", 0.4),
        Metric("robust_acc", r1, "fgsm", E1, **outcomes(r1)), Metric("worst_case_acc", r1, "linf", E1, **outcomes(r1)),
        Metric("robust_acc", r8 + 0.05, "fgsm", E8, **outcomes(r8 + 0.05)), Metric("robust_acc", r8, "autoattack", E8, **outcomes(r8)),
        Metric("worst_case_acc", r8, "linf", E8, **outcomes(r8)),
    ]


CONTROL_PROV = {"plugins": {"pruner": {"family": "control", "paper": "fine-tuned dense control"}}}


def board_store(path: Path, seeds: int = 3, control: bool = True, outdated: str = "") -> Store:
    """cifar10/resnet20: dense `none`, optionally `dense_finetuned`, and two pruners, over `seeds` seeds.

    Against the control, l1_filter gains +5 points at 8/255 on every seed (+4, +5, +6), layer_l1 loses 2 (-1, -2, -3);
    against `none` (the control is 10 points above it) both would look 10 points better.
    """
    store = Store(path)
    for s in range(seeds):
        add_job(store, f"none{s}", "none", 0.0, s, aa(0.5, 0.30, 0.10), dataset="cifar10", arch="resnet20", params=aa_params(s, "none", 0.0))
        if control:
            add_job(store, f"ctl{s}", "dense_finetuned", 0.0, s, aa(0.6, 0.40, 0.20), dataset="cifar10", arch="resnet20",
                    params=aa_params(s, "dense_finetuned", 0.0), provenance=CONTROL_PROV)
        base = 0.20 if control else 0.10
        add_job(store, f"l1{s}", "l1_filter", 0.5, s, aa(0.55, 0.35, base + 0.04 + 0.01 * s), dataset="cifar10", arch="resnet20",
                params=aa_params(s, "l1_filter", 0.5))
        add_job(store, f"ly{s}", "layer_l1", 0.5, s, aa(0.58, 0.38, base - 0.01 - 0.01 * s), dataset="cifar10", arch="resnet20",
                params=aa_params(s, "layer_l1", 0.5) | ({"protocol": 1} if outdated == "layer_l1" else {}))
    return store


def board_view(store: Store):  # type: ignore[no-untyped-def]
    from harness.site.board import families, threat_models, view
    from harness.site.report import verdict
    from harness.store.boards import leaderboards

    with store.session() as s:
        (board,) = leaderboards(s, families(), threat_models())
    return view(board, verdict)


def test_rows_are_ranked_by_delta_against_the_finetuned_control(tmp_path: Path) -> None:
    v = board_view(board_store(tmp_path / "r.db"))
    assert v.control == "dense_finetuned" and not v.fallback
    assert v.key_column == ("worst case", E8) and v.key_strength  # the eps where AutoAttack ran
    labels = [(r.label, r.rank) for r in v.rows]
    assert labels == [("dense_finetuned", None), ("none", None), ("l1_filter", 1), ("layer_l1", 2)]  # references first, unranked
    l1 = next(r for r in v.rows if r.label == "l1_filter")
    assert [s for s, _ in l1.d_key.per_seed] == [0, 1, 2]
    assert [round(d, 6) for _, d in l1.d_key.per_seed] == [0.04, 0.05, 0.06]
    assert l1.d_key.mean == pytest.approx(0.05) and l1.d_key.significant


def test_ranking_column_is_where_the_reference_row_still_has_robustness() -> None:
    from harness.site.board import EpsInfo, key_column
    from harness.store.boards import WORST, Board, BoardRow
    from harness.store.statistics import Estimate

    def board(ctl8: float) -> Board:
        cols = [(WORST, E1), (WORST, 2 / 255), (WORST, E8)]
        rows = []
        for name, accs in (("dense_finetuned", (0.30, 0.15, ctl8)), ("l1_filter", (0.20, 0.10, 0.0))):
            r = BoardRow("resnet20", name, name, "", 0.0, "s", [])
            r.robust = {c: Estimate(a, None, 1) for c, a in zip(cols, accs)}
            rows.append(r)
        return Board("cifar10", "linf", cols, rows)

    eps = [EpsInfo(e, ("AutoAttack",), True) for e in (E1, 2 / 255, E8)]
    # At 8/255 the control is at 0 %: the largest eps where it keeps >= 10 % ranks (2/255), whatever the pruned rows do.
    assert key_column(board(0.0), eps, "dense_finetuned") == ((WORST, 2 / 255), True)
    assert key_column(board(0.12), eps, "dense_finetuned") == ((WORST, E8), True)
    weak8 = [EpsInfo(E1, ("AutoAttack",), True), EpsInfo(2 / 255, ("FGSM",), False), EpsInfo(E8, ("AutoAttack",), True)]
    assert key_column(board(0.0), weak8, "dense_finetuned") == ((WORST, E1), True)  # only reference-strength eps count


def test_clean_change_pairs_each_job_with_the_control_its_paired_tests_use(tmp_path: Path) -> None:
    """A control fine-tuned differently shares the dense model but is never the reference of Δ clean either."""
    path = tmp_path / "ft.db"
    store = Store(path)
    for s in range(3):  # recorded first, so that a pairing by dense model alone would pick it
        p = aa_params(s, "dense_finetuned", 0.0)
        p["pruned"]["finetune"] = {"epochs": 99}
        add_job(store, f"a-long{s}", "dense_finetuned", 0.0, s, aa(0.1, 0.05, 0.0), dataset="cifar10", arch="resnet20",
                params=p, provenance=CONTROL_PROV)
    board_store(path)
    v = board_view(Store(path))
    (l1,) = [r for r in v.rows if r.label == "l1_filter"]
    assert [s for s, _ in l1.d_clean.per_seed] == [0, 1, 2]
    assert [d for _, d in l1.d_clean.per_seed] == pytest.approx([0.55 - 0.6] * 3)


def test_falls_back_to_the_untouched_dense_row_and_says_so(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db", control=False)
    v = board_view(store)
    assert v.control == "none" and v.fallback
    l1 = next(r for r in v.rows if r.label == "l1_filter")
    assert l1.d_key.mean == pytest.approx(0.05)
    html = (build_site(store, tmp_path / "site").parent / "index.html").read_text()
    assert "untouched dense model <code>none</code>" in html and "Δ robust vs none" in html


def test_significance_comes_from_the_paired_test_and_needs_three_seeds(tmp_path: Path) -> None:
    from harness.site.board import Paired

    v = board_view(board_store(tmp_path / "r3.db"))
    l1 = next(r for r in v.rows if r.label == "l1_filter")
    t = l1.d_key.test
    assert t is not None and (t.gained, t.lost) == (45, 0)  # 12 + 15 + 18 images gained over the control
    assert l1.d_key.p_value == pytest.approx(2 * 0.5**45) and l1.d_key.significant
    # A consistent per-seed change is no longer enough: without per-example outcomes there is no test and no mark.
    assert not Paired.of([(0, 0.04), (1, 0.05), (2, 0.06)]).significant
    v2 = board_view(board_store(tmp_path / "r2.db", seeds=2))
    l1 = next(r for r in v2.rows if r.label == "l1_filter")
    assert l1.d_key.p_value is not None and l1.d_key.p_value < 1e-6 and not l1.d_key.significant  # two seeds: no mark
    html = (build_site(board_store(tmp_path / "r2b.db", seeds=2), tmp_path / "site").parent / "index.html").read_text()
    assert not re.search(r'class="[^"]*\bsig\b', html)  # no cell carries the significance class
    assert '<small class="p">p&lt;0.0001</small>' in html  # ... but the p-value is shown
    assert "±" not in html.split("<tbody>")[1].split("</tbody>")[0]  # and no t interval from two seeds


def test_rows_of_an_older_protocol_are_marked_and_the_csv_carries_the_paired_tests(tmp_path: Path) -> None:
    out = build_site(board_store(tmp_path / "r.db", outdated="layer_l1"), tmp_path / "site").parent
    html = (out / "index.html").read_text()
    marked = re.findall(r'<a [^>]*>([^<]+)</a> <span class="outdated"', html)
    assert marked == ["layer_l1"]  # only the row whose jobs ran under protocol 1
    assert "older protocol version (current: " in html
    rows = {r["pruner"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert rows["layer_l1"]["protocol"] == "1" and rows["l1_filter"]["protocol"] == str(PROTOCOL_VERSION)
    l1 = rows["l1_filter"]
    key = f"worst_case@{E8:g}"
    assert float(l1[f"delta_vs_control_{key}"]) == pytest.approx(0.05)  # against the control ...
    assert float(l1[f"delta_vs_dense_{key}"]) == pytest.approx(0.15)  # ... and against the untouched dense model
    assert float(l1[f"p_vs_control_{key}"]) == pytest.approx(2 * 0.5**45)
    assert l1["unit"] == "filters" and rows["none"][f"p_vs_control_{key}"] == ""


def test_a_rerun_under_a_newer_protocol_replaces_the_old_rows(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db", outdated="layer_l1")
    for s in range(2):  # an old run of l1_filter, set up exactly like the new one: it must neither show nor merge
        add_job(store, f"old-l1{s}", "l1_filter", 0.5, s, aa(0.9, 0.9, 0.9), dataset="cifar10", arch="resnet20",
                params=aa_params(s, "l1_filter", 0.5) | {"protocol": 1})
    v = board_view(store)
    l1 = next(r for r in v.rows if r.label == "l1_filter")
    assert [j.key for j in l1.row.jobs] == ["l10", "l11", "l12"] and not l1.row.outdated
    ly = next(r for r in v.rows if r.label == "layer_l1")
    assert ly.row.outdated  # no newer run of layer_l1: it stays, marked


def test_each_setup_states_its_own_attacks_and_protocol(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db")
    for s in range(2):  # an older grid: FGSM only, protocol 1, another pruner (so it is not superseded)
        p = aa_params(s, "hrank", 0.5) | {"protocol": 1}
        p["attacks"] = [{"name": "fgsm", "eps": [E1, E8], "params": {}}]
        metrics = [Metric("clean_acc", 0.4), Metric("robust_acc", 0.2, "fgsm", E1), Metric("worst_case_acc_lower_strength", 0.2, "linf", E1)]
        add_job(store, f"hr{s}", "hrank", 0.5, s, metrics, dataset="cifar10", arch="resnet20", params=p)
    v = board_view(store)
    assert len(v.setups) == 2
    old = next(su for su in v.setups if su.protocol == 1)
    new = next(su for su in v.setups if su.protocol == PROTOCOL_VERSION)
    assert [(e.eps, e.attacks) for e in old.eps] == [(E1, ("FGSM",))]  # not the other setup's AutoAttack
    assert any("AutoAttack" in e.attacks for e in new.eps)
    html = (build_site(store, tmp_path / "site").parent / "index.html").read_text()
    assert "<dt>Protocol</dt>" in html and html.count("<dt>Protocol</dt>") == 1


def test_index_first_screen_content(tmp_path: Path) -> None:
    html = (build_site(board_store(tmp_path / "r.db"), tmp_path / "site").parent / "index.html").read_text()
    top = html[: html.index("<table")]
    for fact in ("5,000", "8 epochs", "published 91.2 %", "300 test images", "ε=8/255: AutoAttack + FGSM", "Verdict"):
        assert fact in top, fact
    assert "ε=1/255: FGSM <em>(lower strength)</em>" in top  # no AutoAttack at 1/255
    assert top.index("Verdict") < top.index("How to read") if "How to read" in top else True
    rows = re.findall(r'<tr data-arch[^>]*>\s*<th scope="row" class="name pin"><a [^>]*>([^<]+)</a>', html)
    assert rows == ["dense_finetuned", "none", "l1_filter", "layer_l1"]
    assert re.search(r'class="key up sig"[^>]*>\+5\.0', html)  # 3 seeds, interval excludes 0: bold
    assert "s0 +4.0, s1 +5.0, s2 +6.0" in html  # per-seed values shown


def test_sort_buttons_tables_and_charts_say_what_they_are(tmp_path: Path) -> None:
    site = build_site(board_store(tmp_path / "r.db"), tmp_path / "site").parent
    html = (site / "index.html").read_text()
    names = re.findall(r'<button type="button" data-name="([^"]+)"', html)
    assert "Δ vs dense_finetuned, ε 1/255" in names and "Δ vs dense_finetuned, ε 8/255" in names
    assert all(n != "Δ" for n in names)
    assert '<span class="vh">Δ vs dense_finetuned, ε 8/255</span>' in html
    assert "latency" not in re.sub(r"<caption.*?</caption>", "", html) and "flags" not in names  # empty columns hidden
    for page in [site / "index.html", *(site / "jobs").iterdir(), *(site / "pruners").iterdir(), site / "schema.html"]:
        text = page.read_text()
        assert text.count("<table") == text.count("<caption>") + text.count("<caption "), page.name
        for svg in re.findall(r"<svg.*?</svg>", text, re.S):
            desc = re.search(r"<desc>(.*?)</desc>", svg, re.S)
            assert desc and re.search(r"\d", desc.group(1)), f"{page.name}: a chart without values in its <desc>"
    dots = re.findall(r"<svg.*?</svg>", html, re.S)
    assert any("Δ robust vs dense_finetuned" in s and 'class="c-zero"' in s for s in dots)  # one sparsity: Δ with a zero line
    curve = next(s for s in dots if "robustness curve" in s)
    assert ">1/255</text>" in curve and ">8/255</text>" in curve and ">clean</text>" in curve


def test_markers_by_index_never_shared() -> None:
    from harness.site.figures import pruner_markers

    names = ["l1_filter", "layer_l1", "hrank", "fpgm", "taylor", "bn_scale", "random_filter"]
    markers = pruner_markers(names, [])
    assert len(set(markers.values())) == len(names)


def test_chart_text_is_at_least_12px() -> None:
    svg = plots.render(plots.Chart("t", "x", "y", [plots.Series("s", [(0.1, 0.5, None)])]))
    assert 'font-size="12"' in svg
    css = (REPO / "templates" / "site.css").read_text()
    sizes = [int(x) for line in css.splitlines() if line.startswith("svg") for x in re.findall(r"(\d+)px", line)]
    assert sizes and min(sizes) >= 12


def test_points_at_the_same_x_are_offset() -> None:
    chart = plots.Chart("t", "x", "y", [plots.Series("a", [(0.5, 0.5, None)]), plots.Series("b", [(0.5, 0.5, None)])], dodge=6.0)
    xs = re.findall(r'<circle cx="([\d.]+)"', plots.render(chart))
    assert len(xs) == 2 and abs(float(xs[0]) - float(xs[1])) == pytest.approx(6.0)


def test_job_pages_show_percentages_and_readable_times(tmp_path: Path) -> None:
    site = build_site(board_store(tmp_path / "r.db", seeds=1), tmp_path / "site").parent
    page = (site / "jobs" / "l10.html").read_text()
    assert "54.0 %" in page or "55.0 %" in page  # clean_acc 0.55
    assert "0.55<" not in page and not re.search(r"\d\d:\d\d:\d\d\.\d+", page)  # no fractions, no microseconds
    assert re.search(r"Finished</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d UTC after 1\.0 s", page)


def test_published_files_hold_no_path_of_the_building_machine(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db", seeds=1)
    prov = {
        "plugins": {"pruner": {"name": "mine", "source": str(REPO / "registry" / "submissions" / "mine.py"), "sha256": "ab" * 32},
                    "architecture": {"name": "resnet20", "source": "/tmp/ci/registry/architectures/cifar_resnet.py", "sha256": "cd" * 32}},
        "data": {"source": str(Path.home() / "data" / "cifar10")},
        "note": f"trained from {tmp_path}/cache/dense.pt",
    }
    add_job(store, "mine0", "mine", 0.5, 0, aa(0.5, 0.3, 0.1), dataset="cifar10", arch="resnet20", params=aa_params(0, "mine", 0.5), provenance=prov)
    site = build_site(store, tmp_path / "site").parent
    leaks = [str(REPO), "/tmp", str(Path.home()), str(tmp_path)]
    for f in site.rglob("*"):
        if f.is_file():
            text = f.read_text()
            assert not [x for x in leaks if x in text], f"{f.relative_to(site)} leaks {[x for x in leaks if x in text]}"
    job = (site / "jobs" / "mine0.html").read_text()
    assert f"submitted file with sha256 {'ab' * 32}" in job and "registry/architectures/cifar_resnet.py" in job
    assert "registry/submissions" not in job  # a submission is named by its sha256, not by where it was recorded


def test_sources_link_to_the_repository_at_the_commit(tmp_path: Path) -> None:
    from harness.site.public import source_label, source_link

    commit = "8341e415b3021b500d2eaf7f2a629baf9bcf6506"
    assert source_link("/tmp/ci/registry/pruners/hrank.py", commit, "https://github.com/o/harness") == (
        f"https://github.com/o/harness/blob/{commit}/registry/pruners/hrank.py")
    assert source_link("/tmp/ci/registry/pruners/hrank.py", commit, None) is None or os.environ.get("HARNESS_REPO_URL")
    assert source_label("/home/u/my_pruner.py", "ab" * 32) == f"file with sha256 {'ab' * 32}"


# ---------------------------------------------------------------- the published database

MACHINE_PATH = re.compile(r"(?<![\w:/.])/(?:tmp|work|root|home|Users|var|opt|mnt|srv|scratch)/")


def _text_cells(db: Path) -> list[str]:
    """Every text value of every table of an SQLite file."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return [v for t in tables for row in con.execute(f'select * from "{t}"') for v in row if isinstance(v, str)]
    finally:
        con.close()


def test_db_scrub_replaces_machine_paths_and_keeps_keys(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    db = tmp_path / "pub.db"
    store = Store(db)
    prov = {"plugins": {"pruner": {"source": "/home/someone/harness/registry/pruners/hrank.py", "sha256": "ab"}},
            "data": {"root": "/tmp/cifar10", "train": 50000}}
    add_job(store, "j0", "hrank", 0.5, 0, linf(0.5, (0.3, 0.2)), params={"data_dir": "/tmp/cifar10"}, provenance=prov)
    store.start_run("g", "/work/checkout/grids/g.toml", 1, {"python": "/usr/bin/python3"})
    store.close()
    assert any(MACHINE_PATH.search(c) for c in _text_cells(db))
    res = CliRunner().invoke(app, ["db", "scrub", "--db", str(db)])
    assert res.exit_code == 0, res.output
    cells = _text_cells(db)
    leaks = [c for c in cells if MACHINE_PATH.search(c) and "data_dir" not in c]  # params define the job: kept
    assert leaks == []
    with Store(db, readonly=True).session() as s:
        (job,) = job_records(s)
        assert job.provenance["plugins"]["pruner"]["source"] == "registry/pruners/hrank.py"
        assert job.key == "j0" and job.params["data_dir"] == "/tmp/cifar10"
    assert "grids/g.toml" in cells


def test_published_database_holds_no_machine_path() -> None:
    db = REPO / "results.db"
    leaks = sorted({m.group(0) for c in _text_cells(db) for m in [MACHINE_PATH.search(c)] if m})
    assert leaks == [], f"run `harness db scrub --db results.db` before committing it: {leaks}"


def test_schema_page_is_the_same_in_every_process() -> None:
    """The schema table lists unique constraints from a set: its order must not follow the process's hash seed."""
    code = "from harness.site.build import _schema; print(_schema())"
    out = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(h)}, capture_output=True, text=True, check=True).stdout
           for h in range(4)}
    assert len(out) == 1
