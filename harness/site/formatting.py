"""How the site and the report write numbers: accuracies in %, changes with intervals and p-values, eps as k/255."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from markupsafe import Markup

from harness.site.board import Paired
from harness.store.statistics import MIN_SEEDS, Estimate


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; – for a missing value."""
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def signed_pct(x: float | None) -> str:
    """A change in points with its sign; – for a missing value."""
    return "–" if x is None or x != x else f"{100 * x:+.1f}"


def eps(x: float | None) -> str:
    """An eps as people write it: 8/255 rather than 0.0313725, but 0.2 rather than 51/255."""
    if x is None:
        return ""
    if abs(x - round(x, 3)) < 1e-9:
        return f"{x:g}"  # a short decimal such as 0.1 or 0.25 reads best as itself
    num = x * 255
    # Linf budgets are usually k/255 (8/255 = 0.0313...); other long decimals print with 3 significant digits.
    return f"{round(num)}/255" if abs(num - round(num)) < 1e-6 else f"{x:.3g}"


def num(x: float | None, digits: int = 3) -> str:
    """A plain number with `digits` significant digits; – for a missing value."""
    if x is None or x != x:
        return "–"
    short = f"{x:.{digits}g}"
    # `g` turns to exponent notation once the integer part has more than `digits` digits (1234.5 -> 1.23e+03).
    return short if abs(x) < 1e4 and "e+" not in short else f"{x:,.0f}"


def sortv(x: float | None) -> str:
    """A data-v attribute value: empty for missing, so the script sorts it last."""
    return "" if x is None or x != x else repr(float(x))


def est(e: Estimate | None) -> Markup:
    """Mean in % with its 95% interval, as table-cell HTML (numbers only, nothing to escape).

    With fewer than 3 seeds the per-seed values replace the interval; an interval that would leave 0-100 % is
    shown as its clipped range instead of mean ± half-width.
    """
    if e is None:
        return Markup("–")
    if e.half_width is None:
        return Markup(pct(e.mean))
    if e.n < MIN_SEEDS:  # a t interval from 2 seeds is 12.7 standard errors wide: the seeds themselves say more
        return Markup(f'{pct(e.mean)}<small class="ci" title="per seed">({", ".join(pct(x) for x in e.values)})</small>')
    lo, hi = e.mean - e.half_width, e.mean + e.half_width
    if lo < 0 or hi > 1:
        return Markup(f'{pct(e.mean)}<small class="ci">[{pct(max(lo, 0.0))}–{pct(min(hi, 1.0))}]</small>')
    return Markup(f'{pct(e.mean)}<small class="ci">±{pct(e.half_width)}</small>')


def delta(d: Paired | Estimate | None) -> Markup:
    """Signed change in % with its interval (from 3 seeds up, clipped to -100..+100 %) and the paired test's p-value.

    With fewer than 3 seeds a t interval is too wide to mean anything (t = 12.7 at 2 seeds): the per-seed values,
    shown beside the cell, say more.
    """
    e = d.estimate if isinstance(d, Paired) else d
    if e is None:
        return Markup("–")
    text = signed_pct(e.mean)
    if e.half_width is not None and e.n >= MIN_SEEDS:
        lo, hi = e.mean - e.half_width, e.mean + e.half_width
        if lo < -1 or hi > 1:
            text += f'<small class="ci">[{signed_pct(max(lo, -1.0))}, {signed_pct(min(hi, 1.0))}]</small>'
        else:
            text += f'<small class="ci">±{pct(e.half_width)}</small>'
    p = d.p_value if isinstance(d, Paired) else None
    if p is not None:  # floored, so that an exact tail of 1e-30 does not read as precision
        text += '<small class="p">' + ("p&lt;0.0001" if p < 1e-4 else f"p={p:.2g}") + "</small>"
    return Markup(text)


def seeds(d: Paired | None) -> str:
    """Per-seed changes as text, e.g. 's0 +1.2, s1 -0.4'."""
    return "" if d is None else ", ".join(f"s{s} {signed_pct(v)}" for s, v in d.per_seed)


def dclass(d: Paired | None) -> str:
    """CSS classes of a change: its direction, and `sig` only when Paired.significant (McNemar, 3 seeds, Holm)."""
    if d is None or d.mean is None or d.mean != d.mean or abs(d.mean) < 5e-4:
        return ""
    return ("up" if d.mean > 0 else "down") + (" sig" if d.significant else "")


def when(t: datetime | None) -> str:
    """A timestamp to the minute, in UTC."""
    if t is None:
        return "–"
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    """Seconds as a readable duration: 0.42 s, 12.3 s, 4 min 05 s, 2 h 03 min."""
    if seconds is None or seconds != seconds:
        return "–"
    if seconds < 59.95:  # from there on, one decimal would print "60.0 s"
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    # Round to the unit shown, then split, so 59.96 s is "1 min 00 s", never "0 min 59 s" or "60.0 s".
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def value(metric: str, v: float) -> str:
    """A stored number as a reader wants it: accuracies and sparsities in %, times as durations."""
    if metric.endswith("_acc") or metric.startswith(("clean_acc", "sparsity_")):
        return f"{100 * v:.1f} %"
    if metric.endswith("_seconds"):
        return duration(v)
    if metric.endswith("_ratio"):
        return f"{v:.3f} ×"
    if metric.startswith("flag_"):
        return "raised" if v >= 0.5 else "passed"
    return num(v, 4)


def slug(name: str) -> str:
    """A file-name-safe, collision-free name for a page (names come from the database and may hold anything)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name) and ".." not in name:
        return name
    clean = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")[:40] or "x"
    return f"{clean}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
