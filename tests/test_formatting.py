"""How the site and the report write numbers: one formatter for both, so a row reads the same in each."""

from __future__ import annotations

import math

import pytest

from harness.site import formatting as fmt
from harness.site.board import Paired
from harness.store.statistics import Estimate


@pytest.mark.parametrize(
    ("x", "text"),
    [(8 / 255, "8/255"), (1 / 255, "1/255"), (0.5, "0.5"), (0.2, "0.2"), (0.0313, "0.0313"), (0.123456, "0.123"), (None, "")],
)
def test_eps_reads_as_people_write_it(x: float | None, text: str) -> None:
    assert fmt.eps(x) == text


def test_percentages_and_missing_values() -> None:
    assert (fmt.pct(0.8854), fmt.signed_pct(-0.029), fmt.signed_pct(0.005)) == ("88.5", "-2.9", "+0.5")
    assert fmt.pct(None) == fmt.pct(math.nan) == fmt.num(math.nan) == "–" and fmt.sortv(math.nan) == ""


def test_estimate_cell_shows_seeds_below_three_and_a_clipped_interval() -> None:
    assert "(40.0, 50.0)" in fmt.est(Estimate(0.45, 0.6, 2, (0.4, 0.5)))
    assert fmt.est(Estimate(0.45, 0.01, 3, (0.44, 0.45, 0.46))) == '45.0<small class="ci">±1.0</small>'
    assert "[0.0–3.0]" in fmt.est(Estimate(0.01, 0.02, 3, (0.0, 0.0, 0.03)))


def test_delta_cell_carries_interval_from_three_seeds_and_a_floored_p() -> None:
    two = Paired.of([(0, -0.02), (1, -0.04)])
    assert "ci" not in fmt.delta(two) and fmt.delta(two).startswith("-3.0")
    three = Paired.of([(0, -0.02), (1, -0.03), (2, -0.04)])
    assert fmt.delta(three).startswith('-3.0<small class="ci">±')
    assert fmt.seeds(three) == "s0 -2.0, s1 -3.0, s2 -4.0"
    assert fmt.dclass(three) == "down" and fmt.dclass(Paired.of([(0, 0.0)])) == ""


@pytest.mark.parametrize(("seconds", "text"), [(0.42, "0.42 s"), (12.34, "12.3 s"), (245, "4 min 05 s"), (7380, "2 h 03 min")])
def test_durations(seconds: float, text: str) -> None:
    assert fmt.duration(seconds) == text
