"""The site's charts: paired changes per row, robustness against cost, sparsity and eps, in one look per pruner."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.site import formatting as fmt
from harness.site import plots
from harness.site.board import BoardView, ViewRow
from harness.store.boards import WORST, BoardRow
from harness.store.statistics import MIN_SEEDS, Estimate


def pruner_colors(labels: Iterable[str], dense: Iterable[str]) -> dict[str, str]:
    """One colour per pruner label across the whole site, by index in name order; dense baselines in black."""
    dense = set(dense)
    others = [label for label in sorted(set(labels)) if label not in dense]
    return {label: plots.color(i) for i, label in enumerate(others)} | {label: plots.DENSE_COLOR for label in dense}


def pruner_markers(labels: Iterable[str], dense: Iterable[str]) -> dict[str, str]:
    """One marker per pruner label, by index in name order (never by hash: two labels must never share a look)."""
    dense = set(dense)
    others = [label for label in sorted(set(labels)) if label not in dense]
    return {label: plots.MARKERS[i % len(plots.MARKERS)] for i, label in enumerate(others)} | {label: plots.REFERENCE_MARKER for label in dense}


@dataclass
class Style:
    """Colour and marker of every pruner label, shared by every chart of the site."""

    colors: dict[str, str]
    markers: dict[str, str]

    def series(self, label: str, points: list[tuple[float, float, float | None]], name: str | None = None, **kw: Any) -> plots.Series:
        """A series in this label's look."""
        return plots.Series(name or label, points, self.colors.get(label, plots.color(0)), self.markers.get(label, "circle"), **kw)


def _est_point(x: float, e: Estimate | None) -> tuple[float, float, float | None] | None:
    return None if e is None else (x, e.mean, e.half_width)


def _suite(v: BoardView, eps: float) -> str:
    info = v.eps_info(eps)
    if info is None:
        return ""
    return ", ".join(info.attacks) + ("" if info.reference else " (lower strength: no reference attack)")


def _row_name(r: ViewRow | BoardRow, multi_arch: bool) -> str:
    row = r.row if isinstance(r, ViewRow) else r
    return row.pruner_label + (f" · {row.architecture}" if multi_arch else "")


def delta_charts(v: BoardView, style: Style, rows: list[ViewRow] | None = None) -> list[tuple[str, str]]:
    """One sparsity: the paired change against the reference row, one panel per eps, a zero line, per-seed ticks."""
    rows = [r for r in (v.rows if rows is None else rows) if not r.reference]
    multi_arch = len({r.row.architecture for r in rows}) > 1
    charts = []
    for col in v.board.worst_columns or v.board.columns[:1]:
        dots = []
        for r in rows:
            d = r.d_robust.get(col)
            if d is None or d.estimate is None:
                continue
            # A 95% interval only from 3 seeds up (from 2 it spans 12.7 standard errors): below that the seeds speak.
            hw = d.estimate.half_width if d.estimate.n >= MIN_SEEDS else None
            dots.append(plots.Dot(_row_name(r, multi_arch), d.estimate.mean, hw, [x for _s, x in d.per_seed],
                                  style.colors.get(r.label, plots.color(0)), style.markers.get(r.label, "circle")))
        if not dots:
            continue
        what = "worst case" if col[0] == WORST else col[0]
        charts.append(("", plots.render_dots(
            f"ε={fmt.eps(col[1])}: Δ robust vs {v.control}" + ("" if col[0] == WORST else f" ({what})"), "change in robust accuracy (points)", dots,
            desc=f"Change in robust accuracy ({what}) against the {v.control} row of the same seed, in percentage points: the mean, "
                 f"each seed's value, and the 95% interval from {MIN_SEEDS} seeds up; attacks at this eps: {_suite(v, col[1])}.",
        )))
    return charts


def cost_charts(v: BoardView, style: Style, rows: list[ViewRow] | None = None) -> list[tuple[str, str]]:
    """Several sparsities: robust accuracy at the ranking column against MACs× and params×, reference rows as lines."""
    col = v.key_column
    if col is None:
        return []
    rows = v.rows if rows is None else rows
    charts = []
    for arch in sorted({r.row.architecture for r in rows}):
        mine = [r for r in rows if r.row.architecture == arch]
        hlines = [plots.HLine(e.mean, r.label) for r in mine if r.reference and (e := r.row.robust.get(col)) is not None]
        for ratio, name in (("macs_ratio", "MACs ×"), ("params_ratio", "params ×")):
            series: dict[str, plots.Series] = {}
            for r in mine:
                cost, e = r.row.ratios.get(ratio), r.row.robust.get(col)
                if r.reference or cost is None or e is None:
                    continue
                series.setdefault(r.label, style.series(r.label, [])).points.append((cost.mean, e.mean, e.half_width))
            if not series:
                continue
            charts.append((arch, plots.render(plots.Chart(
                f"{arch}: worst case ε={fmt.eps(col[1])} vs {name}", f"{name} (pruned / dense)", "robust acc. (%)",
                list(series.values()), hlines, x_domain=(0.0, 1.05), x_format=lambda x: f"{x:.2g}", dodge=4.0,
                desc=f"Worst-case robust accuracy in % over the evaluation subset at ε={fmt.eps(col[1])} ({_suite(v, col[1])}) "
                     f"against the pruned model's {name.split()[0]} as a fraction of the dense model's; lines: reference rows.",
            ))))
    return charts


def robustness_curve(v: BoardView, arch: str, style: Style, limit: int | None = 6) -> str | None:
    """Worst-case accuracy at each eps of the board, evenly spaced and labelled k/255, with clean accuracy at the left.

    Reference rows and the `limit` best-ranked rows of `arch` (all of them with limit None).
    """
    cols = v.board.worst_columns
    if not cols:
        return None
    mine = [r for r in v.rows if r.row.architecture == arch]
    ranked = [r for r in mine if not r.reference]
    shown = [r for r in mine if r.reference] + (ranked if limit is None else ranked[:limit])
    multi_sparsity = len({r.row.sparsity for r in ranked}) > 1
    series = []
    for r in shown:
        pts = [p for i, c in enumerate(cols, 1) if (p := _est_point(float(i), r.row.robust.get(c))) is not None]
        if r.clean_eval is not None:
            pts.insert(0, (0.0, r.clean_eval.mean, r.clean_eval.half_width))
        if pts:
            name = r.label + (f" @ {r.row.sparsity:g}" if multi_sparsity and not r.reference else "")
            series.append(style.series(r.label, pts, name, dash="" if not r.reference else "5 3"))
    if not series:
        return None
    ticks = [(0.0, "clean")] + [(float(i), fmt.eps(c[1])) for i, c in enumerate(cols, 1)]
    more = "" if limit is None or len(ranked) <= limit else f" (reference rows and the {limit} best-ranked of {len(ranked)})"
    return plots.render(
        plots.Chart(f"{arch}: robustness curve{more}", "ε (evenly spaced, not to scale)", "worst-case acc. (%)", series,
                    x_ticks=ticks, x_domain=(-0.4, len(cols) + 0.4), dodge=5.0,
                    desc=f"Accuracy in % over the evaluation subset ({v.rows[0].n_eval or '?'} images): clean, then the worst case "
                         f"over the attacks at each ε; " + "; ".join(f"{fmt.eps(c[1])}: {_suite(v, c[1])}" for c in cols)),
        width=460, height=300,
    )


def sparsity_charts(v: BoardView, style: Style, rows: list[ViewRow]) -> list[tuple[str, str]]:
    """Robust accuracy vs sparsity at the ranking column, one chart per architecture, reference rows as lines."""
    col = v.key_column
    if col is None:
        return []
    charts = []
    for arch in sorted({r.row.architecture for r in rows}):
        mine = [r for r in rows if r.row.architecture == arch]
        hlines = [plots.HLine(e.mean, r.label) for r in mine if r.reference and (e := r.row.robust.get(col)) is not None]
        series: dict[str, plots.Series] = {}
        for r in mine:
            if not r.reference and (p := _est_point(r.row.sparsity, r.row.robust.get(col))) is not None:
                series.setdefault(r.label, style.series(r.label, [])).points.append(p)
        if series:
            charts.append((arch, plots.render(plots.Chart(
                f"{arch}: worst case ε={fmt.eps(col[1])} vs sparsity", "sparsity", "robust acc. (%)", list(series.values()), hlines,
                x_domain=(0.0, 1.0), dodge=4.0,
                desc=f"Worst-case robust accuracy in % at ε={fmt.eps(col[1])} ({_suite(v, col[1])}) against the requested sparsity.",
            ))))
    return charts


def board_figures(v: BoardView, style: Style, rows: list[ViewRow] | None = None) -> list[tuple[str, str]]:
    """The charts that carry information for these rows: Δ per pruner at one sparsity, robust vs cost at several."""
    rows = v.rows if rows is None else rows
    several = len({r.row.sparsity for r in rows if not r.reference}) > 1
    return cost_charts(v, style, rows) if several else delta_charts(v, style, rows)
