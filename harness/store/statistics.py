"""Paired statistics of the boards: per-seed estimates and the paired test of a row against its reference.

docs/grids.md, "Statistics": every job of a grid is evaluated on the same test images, so a pruned
model and its reference of the same seed form per-image pairs. `paired_test` pools the discordant pairs of every
seed (a stratified McNemar test: under "no difference" each discordant pair is equally likely to go either way,
so their split is Binomial(n, 1/2) exactly) and reports the two-sided exact p-value. It conditions on the trained
models, so it says nothing about seed-to-seed variation: a difference is marked significant only with at least
MIN_SEEDS seeds, and the per-seed values are always shown. Intervals of accuracies are clipped to [0, 1].
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
MIN_SEEDS = 3


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with the half-width of its 95% Student-t confidence interval (None with one seed)."""

    mean: float
    half_width: float | None
    n: int
    values: tuple[float, ...] = field(default=(), compare=False)  # the per-seed values, in seed order
    bounds: tuple[float, float] = field(default=(-math.inf, math.inf), compare=False)  # where the quantity can lie

    @classmethod
    def of(cls, values: Iterable[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> Estimate | None:
        """The estimate of some per-seed values, or None when there are none."""
        xs = [v for v in values if v is not None and not math.isnan(v)]
        if not xs:
            return None
        if len(xs) == 1:
            return cls(xs[0], None, 1, tuple(xs), bounds)
        n = len(xs)
        mean = math.fsum(xs) / n
        # Plain floats: statistics.stdev works in exact fractions, far too slow for thousands of cells.
        sd = math.sqrt(max(math.fsum((x - mean) ** 2 for x in xs) / (n - 1), 0.0))
        return cls(mean, t_quantile(n - 1) * sd / math.sqrt(n), n, tuple(xs), bounds)

    @property
    def low(self) -> float | None:
        """Lower end of the interval, clipped to the quantity's range (an accuracy is never below 0)."""
        return None if self.half_width is None else max(self.mean - self.half_width, self.bounds[0])

    @property
    def high(self) -> float | None:
        """Upper end of the interval, clipped to the quantity's range (an accuracy is never above 1)."""
        return None if self.half_width is None else min(self.mean + self.half_width, self.bounds[1])


ACC = (0.0, 1.0)
DELTA = (-1.0, 1.0)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of accuracies over shared evaluation images x seeds (stratified exact McNemar)."""

    delta: float  # mean over seeds of the accuracy difference (row minus reference)
    p_value: float | None  # two-sided exact p-value; None without per-example outcomes
    n_seeds: int
    per_seed: tuple[float, ...]  # the difference of each seed, in seed order
    gained: int  # images x seeds correct in the row only
    lost: int  # images x seeds correct in the reference only
    seeds: tuple[int, ...] = ()  # the seed of each per-seed difference, when the caller knows them
    n_pairs: int = 0  # images x seeds with both outcomes (0 without per-example outcomes)

    @property
    def significant(self) -> bool:
        """p < SIGNIFICANCE with at least MIN_SEEDS seeds (fewer seeds cannot speak for training variation)."""
        return self.p_value is not None and self.n_seeds >= MIN_SEEDS and self.p_value < SIGNIFICANCE

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """Tango's score interval (1998) for the pooled paired difference, (lower, upper) in accuracy units.

        Unconditional, so it stays honest where few images change outcome (no discordant pair still leaves a
        small gain open), unlike the exact interval conditional on the discordant pairs. Like the p-value it treats
        the trained models as fixed: it speaks for image sampling, not for training variation.
        """
        if self.p_value is None or not self.n_pairs:
            return None
        n, gained, lost = self.n_pairs, self.gained, self.lost
        z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)

        def score(d: float) -> float:
            # The restricted MLE of P(lost) given a difference d solves 2n x^2 + (d(2n - gained + lost) - gained - lost) x
            # - lost d (1 - d) = 0; the score statistic is decreasing in d.
            b = d * (2 * n - gained + lost) - gained - lost
            x = (-b + math.sqrt(max(b * b + 8 * n * lost * d * (1 - d), 0.0))) / (4 * n)
            var = n * (2 * x + d - d * d)
            num = gained - lost - n * d
            return 0.0 if var <= 0.0 else num / math.sqrt(var)

        def solve(target: float, lo: float, hi: float) -> float:
            for _ in range(100):  # bisection to well under 1e-12 of accuracy
                mid = (lo + hi) / 2.0
                lo, hi = (mid, hi) if score(mid) > target else (lo, mid)
            return (lo + hi) / 2.0

        point = (gained - lost) / n
        return (solve(z, -1.0, point), solve(-z, point, 1.0))


def holm(p_values: Sequence[float], alpha: float = SIGNIFICANCE) -> list[bool]:
    """Which of a family of p-values are significant under Holm's step-down correction (family-wise error <= alpha)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    out = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] >= alpha / (len(p_values) - rank):
            break  # every larger p fails too
        out[i] = True
    return out


def family_significant(tests: Sequence[PairedTest | None]) -> list[bool]:
    """Which tests of one family (a column's rows) are significant: PairedTest.significant, then Holm over the family.

    Only the tests that could be significant alone (a p-value, MIN_SEEDS seeds) enter the family, as in a verdict.
    """
    family = [i for i, t in enumerate(tests) if t is not None and t.p_value is not None and t.n_seeds >= MIN_SEEDS]
    out = [False] * len(tests)
    for i, keep in zip(family, holm([tests[i].p_value for i in family])):  # type: ignore[misc, union-attr]
        out[i] = keep
    return out


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips (twice the smaller tail, at most 1)."""
    if n == 0:
        return 1.0
    lo = min(k, n - k)
    # Exact integers, divided once: 2.0**n overflows a float from n = 1024 discordant pairs on (a full test set
    # over a few seeds has that many), and int / int rounds correctly at any size.
    count = term = 1
    for i in range(lo):
        term = term * (n - i) // (i + 1)
        count += term
    return min(1.0, 2 * count / (1 << n))


def paired_test(pairs: list[tuple[float, float, np.ndarray | None, np.ndarray | None]]) -> PairedTest | None:
    """Per seed (row accuracy, reference accuracy, row outcomes, reference outcomes) -> the pooled paired test.

    The p-value needs every seed's per-example outcomes on the same images; without them only the deltas are given.
    """
    if not pairs:
        return None
    deltas = tuple(a - b for a, b, _, _ in pairs)
    gained = lost = n = 0
    exact = True
    for _, _, mine, ref in pairs:
        if mine is None or ref is None or len(mine) != len(ref):
            exact = False
            continue
        gained += int((mine & ~ref).sum())
        lost += int((~mine & ref).sum())
        n += len(mine)
    p = binomial_two_sided(gained, gained + lost) if exact else None
    return PairedTest(math.fsum(deltas) / len(deltas), p, len(pairs), deltas, gained, lost, n_pairs=n if exact else 0)


def t_central(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer `df`: the exact finite series (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        for k in range(1, (df - 1) // 2 + 1):  # 1 + (2/3)c^2 + (2*4)/(3*5)c^4 + ... up to c^(df-3)
            total += term
            term *= (2 * k) / (2 * k + 1) * c2
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total) if df > 1 else 2 * theta / math.pi
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):  # 1 + (1/2)c^2 + (1*3)/(2*4)c^4 + ... up to c^(df-2)
        total += term
        term *= (2 * k - 1) / (2 * k) * c2
    return math.sin(theta) * total


@functools.lru_cache(maxsize=None)
def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value for `df` degrees of freedom (bisection on the exact distribution)."""
    lo, hi = 0.0, 1.0
    while t_central(hi, df) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_central(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2
