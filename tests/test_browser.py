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
from test_queries import add_job, linf

from harness.site.build import build_site, slug
from harness.store.session import Store

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


def header(pg: Any, label: str) -> Any:
    """The sort button of the first board's column labelled `label`."""
    return pg.locator("table.board").first.locator("th button").filter(has_text=re.compile(f"^{re.escape(label)}$")).first


def column(pg: Any, header: str, cell: str = "td") -> list[str]:
    """Texts of the visible rows of the first board in the column whose header button reads `header`."""
    return pg.evaluate(
        """([header, cell]) => {
            const table = document.querySelector('table.board');
            const idx = [...table.tHead.rows[0].cells].findIndex(th => th.textContent.trim() === header);
            return [...table.tBodies[0].rows].filter(r => !r.hidden).map(r => r.cells[idx].textContent.trim());
        }""",
        [header, cell],
    )


def test_index_loads_offline_without_errors(page: Any) -> None:
    assert page.title()
    assert page.events["errors"] == [] and [m for m in page.events["console"] if m[0] in ("error", "warning")] == []
    outside = [u for u in page.events["requests"] if not u.startswith(("file://", "data:"))]
    assert outside == [], f"the index fetched {outside}"
    assert page.events["dialogs"] == []


def test_plots_are_present(page: Any) -> None:
    charts = page.locator("svg.chart")
    assert charts.count() >= 5  # worst case vs sparsity per (architecture, eps), plus the Pareto chart
    assert charts.first.is_visible()
    assert page.locator("svg.chart .c-base").count() >= 4  # the dense baseline line in each sparsity chart


def test_sorting_changes_row_order(page: Any) -> None:
    before = column(page, "#")
    assert before == sorted(before, key=int)
    header(page, "clean").click()
    clean = [float(v.split("±")[0]) for v in column(page, "clean")]
    assert clean == sorted(clean, reverse=True) and column(page, "#") != before
    header(page, "clean").click()
    clean = [float(v.split("±")[0]) for v in column(page, "clean")]
    assert clean == sorted(clean)
    assert page.locator("table.board th[aria-sort]").first.get_attribute("aria-sort") == "ascending"


def test_sorting_by_keyboard(page: Any) -> None:
    header(page, "pruner").focus()
    page.keyboard.press("Enter")
    names = column(page, "pruner")
    assert names == sorted(names, key=str.lower)


def test_filters_hide_rows(page: Any) -> None:
    total = len(column(page, "#"))
    charts = page.locator("[data-chart-arch] svg.chart")
    n_charts = sum(charts.nth(i).is_visible() for i in range(charts.count()))
    page.select_option("select[data-filter=arch]", "arch_b")
    assert set(column(page, "architecture")) == {"arch_b"}
    assert sum(charts.nth(i).is_visible() for i in range(charts.count())) == n_charts // 2  # arch_a's charts hide
    page.select_option("select[data-filter=family]", "none")
    assert column(page, "pruner") == ["none"]
    assert "1 of" in page.locator("table.board caption .shown").first.inner_text()
    page.select_option("select[data-filter=arch]", "")
    page.select_option("select[data-filter=family]", "")
    page.select_option("select[data-filter=sparsity]", "0.3")
    assert {float(v) for v in column(page, "sparsity")} == {0.3}
    page.select_option("select[data-filter=sparsity]", "")
    assert len(column(page, "#")) == total


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
