"""Static SVG charts for the site: line charts with error bars, scatter plots with a Pareto front.

No plotting library and no script: the site must open offline from file:// and build fast, so charts are
plain SVG strings. Every piece of text is escaped here, because names come from the results database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); yellow dropped for contrast.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#44AA99", "#999933", "#661100")
DENSE_COLOR = "#222222"
MARKERS = ("circle", "square", "triangle", "diamond")
DASHES = ("", "6 3", "2 3", "8 3 2 3")

WIDTH, HEIGHT = 340, 230
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 46, 12, 26, 40


@dataclass
class Series:
    """One line (or point set): (x, y, CI half-width or None) points with its look."""

    label: str
    points: list[tuple[float, float, float | None]]
    color: str = PALETTE[0]
    marker: str = "circle"
    dash: str = ""
    line: bool = True


@dataclass
class HLine:
    """A horizontal reference line, e.g. the dense baseline."""

    y: float
    label: str
    color: str = DENSE_COLOR


@dataclass
class Chart:
    """What to draw: series, reference lines, optional Pareto front, labelled axes."""

    title: str
    x_label: str
    y_label: str
    series: list[Series]
    hlines: list[HLine] = field(default_factory=list)
    front: list[tuple[float, float]] = field(default_factory=list)
    x_domain: tuple[float, float] | None = None
    y_domain: tuple[float, float] | None = None
    y_bounds: tuple[float, float] = (0.0, 1.0)  # the padded y domain never leaves these (accuracies)
    x_format: Callable[[float], str] = lambda v: f"{v:g}"
    y_format: Callable[[float], str] = lambda v: f"{100 * v:.0f}"


def color(i: int) -> str:
    """The i-th palette colour, cycling."""
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in both coordinates (higher is better in both), sorted by x."""
    front: list[tuple[float, float]] = []
    best_y = float("-inf")
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best_y:
            front.append((x, y))
            best_y = y
    return sorted(front)


def _domain(values: list[float], pad: float = 0.08) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi == lo:
        lo, hi = lo - 0.05, hi + 0.05
    span = hi - lo
    return lo - pad * span, hi + pad * span


def _marker(kind: str, x: float, y: float, fill: str, title: str) -> str:
    t = f"<title>{escape(title)}</title>"
    if kind == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{fill}">{t}</rect>'
    if kind == "triangle":
        return f'<path d="M{x:.1f},{y - 4.5:.1f}L{x + 4:.1f},{y + 3:.1f}L{x - 4:.1f},{y + 3:.1f}Z" fill="{fill}">{t}</path>'
    if kind == "diamond":
        return f'<path d="M{x:.1f},{y - 4.5:.1f}L{x + 4.5:.1f},{y:.1f}L{x:.1f},{y + 4.5:.1f}L{x - 4.5:.1f},{y:.1f}Z" fill="{fill}">{t}</path>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}">{t}</circle>'


def render(chart: Chart, width: int = WIDTH, height: int = HEIGHT) -> str:
    """The chart as an inline, self-describing SVG element (role=img with a title)."""
    pts = [(x, y, e) for s in chart.series for x, y, e in s.points]
    xs = [p[0] for p in pts]
    ys = [p[1] + (p[2] or 0) for p in pts] + [p[1] - (p[2] or 0) for p in pts] + [h.y for h in chart.hlines]
    x0, x1 = chart.x_domain or _domain(xs)
    y0, y1 = chart.y_domain or _domain(ys)
    y0, y1 = max(y0, chart.y_bounds[0]), min(y1, chart.y_bounds[1])
    if y1 <= y0:  # every value at a bound (e.g. all 0%): show a band above or below it
        y0, y1 = (y0, y0 + 0.1) if y0 < chart.y_bounds[1] else (y1 - 0.1, y1)
    pw, ph = width - MARGIN_L - MARGIN_R, height - MARGIN_T - MARGIN_B

    def sx(v: float) -> float:
        return MARGIN_L + (v - x0) / (x1 - x0) * pw if x1 > x0 else MARGIN_L + pw / 2

    def sy(v: float) -> float:
        return MARGIN_T + ph - (min(max(v, y0), y1) - y0) / (y1 - y0) * ph if y1 > y0 else MARGIN_T + ph / 2

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(chart.title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(chart.title)}</title>",
        f'<text class="c-title" x="{MARGIN_L}" y="15">{escape(chart.title)}</text>',
    ]
    for t in nice_ticks(y0, y1):
        out.append(f'<line class="c-grid" x1="{MARGIN_L}" x2="{MARGIN_L + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>')
        out.append(f'<text class="c-tick" x="{MARGIN_L - 4}" y="{sy(t) + 3:.1f}" text-anchor="end">{escape(chart.y_format(t))}</text>')
    for t in nice_ticks(x0, x1):
        out.append(f'<text class="c-tick" x="{sx(t):.1f}" y="{MARGIN_T + ph + 13}" text-anchor="middle">{escape(chart.x_format(t))}</text>')
    out.append(f'<rect class="c-frame" x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}"/>')
    out.append(f'<text class="c-label" x="{MARGIN_L + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(chart.x_label)}</text>')
    out.append(
        f'<text class="c-label" transform="translate(11,{MARGIN_T + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{escape(chart.y_label)}</text>'
    )
    for h in chart.hlines:
        out.append(
            f'<line class="c-base" x1="{MARGIN_L}" x2="{MARGIN_L + pw}" y1="{sy(h.y):.1f}" y2="{sy(h.y):.1f}" stroke="{h.color}">'
            f"<title>{escape(h.label)}: {escape(chart.y_format(h.y))}</title></line>"
        )
        out.append(f'<text class="c-tick" x="{MARGIN_L + pw - 2}" y="{sy(h.y) - 3:.1f}" text-anchor="end">{escape(h.label)}</text>')
    if len(chart.front) > 1:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in chart.front)
        out.append(f'<polyline class="c-front" points="{path}"><title>Pareto front</title></polyline>')
    for s in chart.series:
        ordered = sorted(s.points)
        if s.line and len(ordered) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in ordered)
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<polyline class="c-line" points="{path}" stroke="{s.color}"{dash}/>')
        for x, y, e in ordered:
            if e:
                out.append(f'<line class="c-err" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(y - e):.1f}" y2="{sy(y + e):.1f}" stroke="{s.color}"/>')
            ci = f" ± {chart.y_format(e)}" if e else ""
            out.append(_marker(s.marker, sx(x), sy(y), s.color, f"{s.label}: {chart.x_label} {chart.x_format(x)}, {chart.y_label} {chart.y_format(y)}{ci}"))
    out.append("</svg>")
    return "".join(out)
