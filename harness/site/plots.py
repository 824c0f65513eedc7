"""Static SVG charts for the site: line charts with error bars, dot plots of changes, scatter plots with a front.

No plotting library and no script: the site must open offline from file:// and build fast, so charts are
plain SVG strings. Every piece of text is escaped here, because names come from the results database. Every
chart carries a <desc> listing its values, for screen readers and for anyone who wants the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); yellow dropped for contrast.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#44AA99", "#999933", "#661100")
DENSE_COLOR = "#222222"
# Seven shapes for pruners: with ten colours, assigning both by index keeps (colour, shape) unique for 70 series.
MARKERS = ("circle", "triangle", "diamond", "down", "cross", "plus", "ring")
REFERENCE_MARKER = "square"  # dense and control rows only
DASHES = ("", "6 3", "2 3", "8 3 2 3")

WIDTH, HEIGHT = 380, 260
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 54, 14, 30, 46
FONT_PX = 12  # the smallest text in a chart (ticks), in SVG units


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
    x_ticks: list[tuple[float, str]] | None = None  # explicit (position, label) ticks, e.g. eps as k/255
    dodge: float = 0.0  # px between series at the same x, so points never hide each other
    desc: str = ""  # what the values are (unit, denominator); the values themselves are listed after it


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


def step_digits(step: float) -> int:
    """Decimals that print every multiple of a tick step exactly (2.5 -> 1, 0.25 -> 2, 20 -> 0)."""
    for d in range(6):
        if abs(round(step, d) - step) < 1e-9 * max(1.0, abs(step)):
            return d
    return 6


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
    if kind == "down":
        return f'<path d="M{x:.1f},{y + 4.5:.1f}L{x + 4:.1f},{y - 3:.1f}L{x - 4:.1f},{y - 3:.1f}Z" fill="{fill}">{t}</path>'
    if kind == "diamond":
        return f'<path d="M{x:.1f},{y - 4.5:.1f}L{x + 4.5:.1f},{y:.1f}L{x:.1f},{y + 4.5:.1f}L{x - 4.5:.1f},{y:.1f}Z" fill="{fill}">{t}</path>'
    if kind == "cross":
        d = f"M{x - 3.5:.1f},{y - 3.5:.1f}L{x + 3.5:.1f},{y + 3.5:.1f}M{x - 3.5:.1f},{y + 3.5:.1f}L{x + 3.5:.1f},{y - 3.5:.1f}"
        return f'<path d="{d}" stroke="{fill}" stroke-width="2.4" fill="none">{t}</path>'
    if kind == "ring":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.6" fill="#fff" stroke="{fill}" stroke-width="2">{t}</circle>'
    if kind == "plus":
        d = f"M{x - 4.5:.1f},{y:.1f}L{x + 4.5:.1f},{y:.1f}M{x:.1f},{y - 4.5:.1f}L{x:.1f},{y + 4.5:.1f}"
        return f'<path d="{d}" stroke="{fill}" stroke-width="2.4" fill="none">{t}</path>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}">{t}</circle>'


def _open(title: str, desc: str, width: int, height: int) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" font-size="{FONT_PX}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
        f'<text class="c-title" x="{MARGIN_L}" y="17">{escape(title)}</text>',
    ]


def _ci(fmt: Callable[[float], str], e: float | None) -> str:
    return f" ± {fmt(e)}" if e else ""


def describe(chart: Chart) -> str:
    """The chart's values as text: every series' points and every reference line."""
    parts = [chart.desc] if chart.desc else []
    ticks = dict(chart.x_ticks or [])
    xf = (lambda v: ticks.get(v) or chart.x_format(v)) if ticks else chart.x_format
    for s in chart.series:
        pts = ", ".join(f"{xf(x)}: {chart.y_format(y)}{_ci(chart.y_format, e)}" for x, y, e in sorted(s.points))
        parts.append(f"{s.label} ({chart.x_label} → {chart.y_label}): {pts}")
    parts += [f"{h.label}: {chart.y_format(h.y)}" for h in chart.hlines]
    return ". ".join(parts) + "."


def render(chart: Chart, width: int = WIDTH, height: int = HEIGHT) -> str:
    """The chart as an inline, self-describing SVG element (role=img with a title and a <desc> of its values)."""
    pts = [(x, y, e) for s in chart.series for x, y, e in s.points]
    xs = [p[0] for p in pts] + [t for t, _ in chart.x_ticks or []]
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

    out = _open(chart.title, describe(chart), width, height)
    for t in nice_ticks(y0, y1):
        out.append(f'<line class="c-grid" x1="{MARGIN_L}" x2="{MARGIN_L + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>')
        out.append(f'<text class="c-tick" x="{MARGIN_L - 5}" y="{sy(t) + 4:.1f}" text-anchor="end">{escape(chart.y_format(t))}</text>')
    xticks = chart.x_ticks if chart.x_ticks is not None else [(t, chart.x_format(t)) for t in nice_ticks(x0, x1)]
    for t, label in xticks:
        out.append(f'<text class="c-tick" x="{sx(t):.1f}" y="{MARGIN_T + ph + 16}" text-anchor="middle">{escape(label)}</text>')
    out.append(f'<rect class="c-frame" x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}"/>')
    out.append(f'<text class="c-label" x="{MARGIN_L + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(chart.x_label)}</text>')
    out.append(
        f'<text class="c-label" transform="translate(14,{MARGIN_T + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{escape(chart.y_label)}</text>'
    )
    for h in chart.hlines:
        out.append(
            f'<line class="c-base" x1="{MARGIN_L}" x2="{MARGIN_L + pw}" y1="{sy(h.y):.1f}" y2="{sy(h.y):.1f}" stroke="{h.color}">'
            f"<title>{escape(h.label)}: {escape(chart.y_format(h.y))}</title></line>"
        )
        # The label sits at the left edge, above the line: series points cluster to the right (higher sparsity).
        out.append(f'<text class="c-tick c-hlabel" x="{MARGIN_L + 3}" y="{sy(h.y) - 4:.1f}">{escape(h.label)}</text>')
    if len(chart.front) > 1:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in chart.front)
        out.append(f'<polyline class="c-front" points="{path}"><title>Pareto front</title></polyline>')
    n = len(chart.series)
    for i, s in enumerate(chart.series):
        off = (i - (n - 1) / 2) * chart.dodge  # series side by side around their x, in px

        def px(v: float, off: float = off) -> float:
            return sx(v) + off

        ordered = sorted(s.points)
        if s.line and len(ordered) > 1:
            path = " ".join(f"{px(x):.1f},{sy(y):.1f}" for x, y, _ in ordered)
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<polyline class="c-line" points="{path}" stroke="{s.color}"{dash}/>')
        for x, y, e in ordered:
            if e:
                out.append(f'<line class="c-err" x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{sy(y - e):.1f}" y2="{sy(y + e):.1f}" stroke="{s.color}"/>')
            xl = dict(xticks).get(x) or chart.x_format(x)
            out.append(_marker(s.marker, px(x), sy(y), s.color, f"{s.label}: {chart.x_label} {xl}, {chart.y_label} {chart.y_format(y)}{_ci(chart.y_format, e)}"))
    out.append("</svg>")
    return "".join(out)


@dataclass
class Dot:
    """One row of a dot plot: a label, a value with its CI half-width, per-seed values, and its look."""

    label: str
    value: float
    half_width: float | None
    seeds: list[float]
    color: str = PALETTE[0]
    marker: str = "circle"


def render_dots(title: str, x_label: str, dots: list[Dot], desc: str = "", width: int = WIDTH,
                fmt: Callable[[float], str] = lambda v: f"{100 * v:+.1f}",
                tick_format: Callable[[float], str] | None = None) -> str:
    """A horizontal dot plot of changes (one row per label) with CIs, per-seed ticks and a zero line.

    Ticks are in points, with as many decimals as their step needs (a 0.25-point step must not read -0, -0, 0).
    """
    row_h, label_w = 22, min(150, 12 + 7 * max((len(d.label) for d in dots), default=4))
    height = MARGIN_T + row_h * max(len(dots), 1) + MARGIN_B
    left = label_w + 8
    vals = [v for d in dots for v in (d.value - (d.half_width or 0), d.value + (d.half_width or 0), *d.seeds)] + [0.0]
    x0, x1 = _domain([min(max(v, -1.0), 1.0) for v in vals])  # a change in accuracy lies in -100..+100 points

    def clip(v: float) -> float:
        return min(max(v, x0), x1)

    pw = width - left - MARGIN_R

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    values = "; ".join(
        f"{d.label}: {fmt(d.value)}{_ci(lambda v: f'{100 * v:.1f}', d.half_width)}"
        + (f" (seeds {', '.join(fmt(v) for v in d.seeds)})" if d.seeds else "")
        for d in dots
    )
    out = _open(title, f"{desc} {values}.".strip(), width, height)
    bottom = MARGIN_T + row_h * max(len(dots), 1)
    ticks = nice_ticks(x0, x1)
    digits = step_digits(100 * (ticks[1] - ticks[0])) if len(ticks) > 1 else 0

    def tick_text(v: float) -> str:
        if tick_format is not None:
            return tick_format(v)
        return f"{100 * v:+.{digits}f}" if abs(v) > 1e-12 else "0"

    for t in ticks:
        out.append(f'<line class="c-grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{MARGIN_T}" y2="{bottom}"/>')
        out.append(f'<text class="c-tick" x="{sx(t):.1f}" y="{bottom + 16}" text-anchor="middle">{escape(tick_text(t))}</text>')
    out.append(f'<line class="c-zero" x1="{sx(0):.1f}" x2="{sx(0):.1f}" y1="{MARGIN_T}" y2="{bottom}"><title>no change</title></line>')
    out.append(f'<text class="c-label" x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    for i, d in enumerate(dots):
        y = MARGIN_T + row_h * i + row_h / 2
        out.append(f'<text class="c-tick" x="{label_w}" y="{y + 4:.1f}" text-anchor="end">{escape(_short(d.label, label_w))}<title>{escape(d.label)}</title></text>')
        if d.half_width:
            lo, hi = sx(clip(d.value - d.half_width)), sx(clip(d.value + d.half_width))
            out.append(f'<line class="c-err" x1="{lo:.1f}" x2="{hi:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{d.color}"/>')
        for v in d.seeds:
            out.append(f'<line class="c-seed" x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{y - 6:.1f}" y2="{y + 6:.1f}" stroke="{d.color}"><title>{escape(d.label)}: one seed {escape(fmt(v))}</title></line>')
        ci = _ci(lambda v: f"{100 * v:.1f}", d.half_width)
        out.append(_marker(d.marker, sx(d.value), y, d.color, f"{d.label}: {fmt(d.value)}{ci}"))
    out.append("</svg>")
    return "".join(out)


def _short(label: str, width_px: int) -> str:
    n = max(4, (width_px - 12) // 7)
    return label if len(label) <= n else label[: n - 1] + "…"
