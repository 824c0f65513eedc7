"""End to end in headless Chromium: the site opens from file:// offline, sorts, filters, links, shows its plots.

Needs Debian's `chromium` and the Playwright client (`.ci/browser-deps` installs both); skips otherwise.
Playwright's own browser download is never used: the tests launch the system binary through executable_path.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.site.build import build_site
from harness.site.formatting import slug
from harness.store.session import Store
from tests.test_boards import add_job, linf
from tests.test_site import board_store

pytestmark = pytest.mark.browser

EVIL = "<script>alert(1)</script>"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]


def chromium_path() -> str | None:
    """The real Chromium binary (Debian's /usr/bin/chromium is a wrapper script), or HARNESS_CHROMIUM."""
    for candidate in (os.environ.get("HARNESS_CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, or a skip that says what is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: run .ci/browser-deps")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium at /usr/lib/chromium/chromium (or HARNESS_CHROMIUM): run .ci/browser-deps")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        except Exception as exc:  # a broken browser install is an environment problem, not a site bug
            pytest.skip(f"Chromium at {exe} does not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site with two architectures, three pruners (one named like a script), two seeds."""
    tmp = tmp_path_factory.mktemp("browser")
    store = Store(tmp / "r.db")
    for arch in ("arch_a", "arch_b"):
        for seed in (0, 1):
            add_job(store, f"n-{arch}-{seed}", "none", 0.0, seed, linf(0.90, (0.40 + seed / 100, 0.20)), arch=arch)
            add_job(store, f"l1-{arch}-{seed}", "l1_filter", 0.5, seed, linf(0.88 - seed / 100, (0.50, 0.30), 0.5), arch=arch)
            add_job(store, f"rnd-{arch}-{seed}", "random_filter", 0.3, seed, linf(0.95, (0.20, 0.05), 0.7), arch=arch)
    add_job(store, "evil", EVIL, 0.3, 0, linf(0.5, (0.1, 0.0)), arch="arch_a", label=EVIL,
            provenance={"plugins": {"pruner": {"description": "<b>x</b>", "paper": "<img src=x onerror=alert(2)>"}}})
    return build_site(store, tmp / "site").parent


@pytest.fixture
def page(browser: Any, site: Path) -> Iterator[Any]:
    """The index, opened from file://, with console messages, page errors, dialogs and requests recorded."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(5000)
    pg = ctx.new_page()
    pg.events = {"console": [], "errors": [], "dialogs": [], "requests": []}  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.events["console"].append((m.type, m.text)))
    pg.on("pageerror", lambda e: pg.events["errors"].append(str(e)))
    pg.on("dialog", lambda d: (pg.events["dialogs"].append(d.message), d.dismiss()))
    pg.on("request", lambda r: pg.events["requests"].append(r.url))
    pg.goto((site / "index.html").as_uri())
    pg.wait_for_load_state("load")
    yield pg
    ctx.close()


def header(pg: Any, name: str) -> Any:
    """The sort button of the first board's column whose full name is `name`."""
    return pg.locator("table.board").first.locator(f'th button[data-name="{name}"]').first


def column(pg: Any, name: str) -> list[str]:
    """Texts of the visible rows of the first board in the column whose sort button's full name is `name`."""
    return pg.evaluate(
        """(name) => {
            const table = document.querySelector('table.board');
            const idx = [...table.tHead.rows[0].cells].findIndex(th => th.querySelector(`button[data-name="${name}"]`));
            return [...table.tBodies[0].rows].filter(r => !r.hidden).map(r => r.cells[idx].textContent.trim());
        }""",
        name,
    )


def test_index_loads_offline_without_errors(page: Any) -> None:
    assert page.title()
    assert page.events["errors"] == [] and [m for m in page.events["console"] if m[0] in ("error", "warning")] == []
    outside = [u for u in page.events["requests"] if not u.startswith(("file://", "data:"))]
    assert outside == [], f"the index fetched {outside}"
    assert page.events["dialogs"] == []


def test_plots_are_present(page: Any) -> None:
    charts = page.locator("svg.chart")
    assert charts.count() >= 4  # per architecture: robust accuracy vs params x (two sparsities) and the robustness curve
    assert charts.first.is_visible()
    assert page.locator("svg.chart .c-base").count() >= 2  # the dense reference line in each cost chart


def test_sorting_changes_row_order(page: Any) -> None:
    before = column(page, "rank")
    ranks = [int(v) for v in before if v != "ref"]
    assert ranks == sorted(ranks) and before[: before.count("ref")] == ["ref"] * before.count("ref")  # references first
    clean_name = "clean accuracy on the whole test set"
    header(page, clean_name).click()
    clean = [float(re.split(r"[±[(]", v)[0]) for v in column(page, clean_name)]
    assert clean == sorted(clean, reverse=True) and column(page, "rank") != before
    header(page, clean_name).click()
    clean = [float(re.split(r"[±[(]", v)[0]) for v in column(page, clean_name)]
    assert clean == sorted(clean)
    assert page.locator("table.board th[aria-sort]").first.get_attribute("aria-sort") == "ascending"


def test_sorting_by_keyboard(page: Any) -> None:
    header(page, "pruner").focus()
    page.keyboard.press("Enter")
    names = column(page, "pruner")
    assert names == sorted(names, key=str.lower)


def test_filters_hide_rows(page: Any) -> None:
    total = len(column(page, "rank"))
    charts = page.locator("[data-chart-arch] svg.chart")
    n_charts = sum(charts.nth(i).is_visible() for i in range(charts.count()))
    page.select_option("select[data-filter=arch]", "arch_b")
    assert set(column(page, "architecture")) == {"arch_b"}
    assert sum(charts.nth(i).is_visible() for i in range(charts.count())) == n_charts // 2  # arch_a's charts hide
    page.select_option("select[data-filter=family]", "none")
    assert [v.split()[0] for v in column(page, "pruner")] == ["none"]  # the dense row, tagged "reference"
    assert "1 of" in page.locator("table.board caption .shown").first.inner_text()
    page.select_option("select[data-filter=arch]", "")
    page.select_option("select[data-filter=family]", "")
    page.select_option("select[data-filter=sparsity]", "0.3")
    assert {float(v.split()[0]) for v in column(page, "sparsity")} == {0.3}
    page.select_option("select[data-filter=sparsity]", "")
    assert len(column(page, "rank")) == total


def test_links_to_pruner_and_job_pages_resolve(page: Any) -> None:
    page.locator("table.board a", has_text="l1_filter").first.click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/pruners/l1_filter.html")
    assert "l1_filter" in page.locator("h1").inner_text()
    page.locator("td.seeds a").first.click()
    page.wait_for_load_state("load")
    assert "/jobs/" in page.url and page.locator("h1").inner_text().startswith("Job")
    assert page.locator("text=Reproduce").count() == 1
    assert page.events["errors"] == []


def test_hostile_names_show_as_text(page: Any, site: Path) -> None:
    assert page.locator("table.board a", has_text=EVIL).count() == 1
    assert page.events["dialogs"] == []
    page.goto((site / "pruners" / f"{slug(EVIL)}.html").as_uri())
    assert EVIL in page.locator("h1").inner_text()
    assert "<b>x</b>" in page.locator("dl.facts").inner_text() and page.locator("dl.facts img").count() == 0
    assert page.events["dialogs"] == []


def test_attack_columns_toggle(page: Any) -> None:
    attack_th = page.locator("th.attack-col").first
    assert not attack_th.is_visible()
    page.check("input[data-toggle=attack-cols]")
    assert attack_th.is_visible()


def test_phone_width_scrolls_tables_not_the_page(browser: Any, site: Path) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 800})
    pg = ctx.new_page()
    pg.goto((site / "index.html").as_uri())
    overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    ctx.close()
    assert overflow <= 1


# ---------------------------------------------------------------- the first screen, phones, accessibility, provenance


@pytest.fixture(scope="module")
def board_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10 board shaped like the published one: control, dense, two pruners, three seeds, AutoAttack at 8/255."""
    tmp = tmp_path_factory.mktemp("board")
    return build_site(board_store(tmp / "r.db"), tmp / "site").parent


def _open(browser: Any, path: Path, width: int, height: int) -> tuple[Any, Any]:
    ctx = browser.new_context(viewport={"width": width, "height": height})
    pg = ctx.new_page()
    pg.goto(path.as_uri())
    pg.wait_for_load_state("load")
    return ctx, pg


def test_verdict_and_first_row_visible_without_scrolling(browser: Any, board_site: Path) -> None:
    ctx, pg = _open(browser, board_site / "index.html", 1400, 900)
    try:
        assert pg.evaluate("window.scrollY") == 0
        for sel in ("p.verdict", "dl.setup", "table.board tbody tr >> nth=0"):
            box = pg.locator(sel).first.bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 900, f"{sel} ends at {box} (below 900 px)"
        first = pg.locator("table.board tbody tr").first.inner_text()
        assert first.startswith("dense_finetuned")  # the reference row, unranked, on top
        ranked = pg.locator("table.board tbody tr").nth(2)
        box = ranked.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 900 and ranked.inner_text().startswith("l1_filter")
    finally:
        ctx.close()


def test_phone_shows_pruner_and_both_deltas(browser: Any, board_site: Path) -> None:
    ctx, pg = _open(browser, board_site / "index.html", 390, 844)
    try:
        row = pg.locator("table.board tbody tr").nth(2)  # the first ranked row
        row.scroll_into_view_if_needed()
        cells = [row.locator("th.pin"), row.locator("td.key").nth(0), row.locator("td.key").nth(1)]
        for cell in cells:
            box = cell.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, f"{cell.inner_text()!r} at {box}"
        assert cells[0].inner_text().startswith("l1_filter") and "+5.0" in cells[1].inner_text()
        assert pg.locator(".scroll-cue").first.is_visible()  # the table is wider than the phone, and says so
        assert not pg.locator("table.board th.sec").first.is_visible()  # secondary columns folded below 600 px
        # The pruner column stays put when the table scrolls sideways.
        pg.locator(".table-wrap").first.evaluate("w => { w.scrollLeft = 400; }")
        box = row.locator("th.pin").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    finally:
        ctx.close()


def test_sorting_by_a_delta_column_is_announced_by_its_full_name(browser: Any, board_site: Path) -> None:
    ctx, pg = _open(browser, board_site / "index.html", 1400, 900)
    try:
        name = "Δ vs dense_finetuned, ε 8/255"
        button = pg.get_by_role("button", name=name, exact=True)  # the accessible name, not the visible "Δ"
        assert button.count() == 1 and button.inner_text().strip().startswith("Δ")
        button.click()
        status = pg.locator("table.board .sort-status").first
        assert status.text_content() == f"Sorted by {name}, descending"
        assert button.locator("xpath=..").get_attribute("aria-sort") == "descending"
    finally:
        ctx.close()


def test_every_chart_has_a_desc_and_12px_text(browser: Any, board_site: Path) -> None:
    pages = [board_site / "index.html", *sorted((board_site / "pruners").iterdir()), *sorted((board_site / "architectures").iterdir())]
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    try:
        seen = 0
        for path in pages:
            pg.goto(path.as_uri())
            charts = pg.evaluate("""() => [...document.querySelectorAll('svg')].map(s => ({
                desc: (s.querySelector(':scope > desc') || {}).textContent || '',
                sizes: [...s.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize)),
            }))""")
            for c in charts:
                assert re.search(r"\d", c["desc"]), f"{path.name}: a chart without its values in <desc>"
                assert min(c["sizes"]) >= 12, f"{path.name}: chart text at {min(c['sizes'])} px"
            seen += len(charts)
        assert seen >= 4
    finally:
        ctx.close()


def test_no_published_file_holds_an_absolute_path(browser: Any, tmp_path: Path) -> None:
    """Build with provenance that records this machine's paths; neither the files nor the rendered pages may show them."""
    from tests.test_site import aa, aa_params

    store = board_store(tmp_path / "r.db", seeds=1)
    repo = Path(__file__).resolve().parent.parent
    prov = {"plugins": {"pruner": {"name": "mine", "source": str(repo / "registry" / "pruners" / "mine.py"), "sha256": "ab" * 32}},
            "data": {"source": str(Path.home() / "datasets")}, "cache": str(tmp_path / "cache")}
    add_job(store, "mine0", "mine", 0.5, 0, aa(0.5, 0.3, 0.1), dataset="cifar10", arch="resnet20", params=aa_params(0, "mine", 0.5), provenance=prov)
    site = build_site(store, tmp_path / "site").parent
    leaks = [str(repo), "/tmp", str(Path.home()), str(tmp_path)]
    for f in sorted(site.rglob("*")):
        if f.is_file():
            found = [x for x in leaks if x in f.read_text()]
            assert not found, f"{f.relative_to(site)} holds {found}"
    ctx = browser.new_context()
    pg = ctx.new_page()
    try:
        for page in (site / "jobs" / "mine0.html", site / "pruners" / "mine.html"):
            pg.goto(page.as_uri())
            text = pg.locator("body").inner_text()
            assert not [x for x in leaks if x in text] and "registry/pruners/mine.py" in text
    finally:
        ctx.close()


def test_verdict_table_and_limits_follow_the_board_without_widening_a_phone(browser: Any, board_site: Path) -> None:
    ctx, pg = _open(browser, board_site / "index.html", 390, 844)
    try:
        assert pg.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
        table, limits = pg.locator("table.verdicts"), pg.locator("details.limits li")
        assert table.count() == 1 and limits.count() >= 4
        board_y = pg.locator("table.board").bounding_box()["y"]
        assert table.bounding_box()["y"] > board_y  # below the board: the first screen stays setup, verdict, rows
        assert "contradicts" in table.inner_text() and "does not support" in table.inner_text()
    finally:
        ctx.close()
