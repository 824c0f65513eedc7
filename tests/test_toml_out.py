"""The TOML value writer against the standard library's reader: every value it writes reads back equal."""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path
from typing import Any

import pytest
import tomllib

from harness.api.errors import GridError
from harness.api.toml_out import toml_key, toml_string, toml_value


def read_back(v: Any) -> Any:
    """`v` written as the value of key x, then parsed by tomllib."""
    return tomllib.loads(f"x = {toml_value(v)}\n")["x"]


STRINGS = [
    "", "plain", 'say "hi"', "back\\slash", "C:\\new\\table", "line\nbreak\r\n", "tab\there", "\b\f",
    "nul\x00 esc\x1b del\x7f", "é ü ß", "ε = 8/255", "emoji 😀 and 𝔘", "'single' quotes", "trailing \\",
    "\u2028 line separator", "\ufeff bom",
]


@pytest.mark.parametrize("s", STRINGS)
def test_strings_round_trip(s: str) -> None:
    assert read_back(s) == s
    assert toml_string(s).isascii()


def test_random_unicode_strings_round_trip() -> None:
    rng = random.Random(0)
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for _ in range(300):
        s = "".join(chr(rng.choice(points) if rng.random() < 0.3 else rng.randrange(0x80)) for _ in range(rng.randrange(12)))
        assert read_back(s) == s


@pytest.mark.parametrize("v", [0, -1, 7, 2**63 - 1, -(2**63), True, False])
def test_integers_and_booleans_round_trip(v: int) -> None:
    back = read_back(v)
    assert back == v and type(back) is type(v)


@pytest.mark.parametrize("v", [0.0, -0.0, 0.1, 8 / 255, 1e-05, 1e16, 1.5e300, 5e-324, 1.7976931348623157e308, -2.5, math.inf, -math.inf])
def test_floats_round_trip_exactly(v: float) -> None:
    back = read_back(v)
    assert type(back) is float and back == v and math.copysign(1, back) == math.copysign(1, v)


def test_nan_and_float_subclasses() -> None:
    assert math.isnan(read_back(math.nan))

    class Precise(float):
        def __repr__(self) -> str:
            return f"Precise({float(self)})"

    assert read_back(Precise(0.25)) == 0.25  # numpy scalars repr like this: the writer must not use their repr


def test_dates_and_times_round_trip() -> None:
    for v in (dt.date(2026, 11, 27), dt.datetime(2026, 11, 27, 2, 45, 1, 250000), dt.time(4, 20, 0, 5),
              dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5)))):
        assert read_back(v) == v


def test_nested_arrays_and_tables_round_trip_with_any_key() -> None:
    v = {
        "name": "l1_filter", "global-ranking": True, "with space": 1, "dotted.key": [1, 2], "": "empty key",
        "ключ": {"inner": [0.5, "a", [True, False]], "deeper": {"x": -3}}, "empty": {}, "list": [], "t": (1, 2),
    }
    expected = {**v, "t": [1, 2]}
    assert read_back(v) == expected
    assert read_back([v, {"a": 1}]) == [expected, {"a": 1}]


def test_keys_are_bare_only_when_toml_allows() -> None:
    assert toml_key("eps_linf") == "eps_linf" and toml_key("a-b") == "a-b"
    assert toml_key("a.b") == '"a.b"' and toml_key("") == '""' and toml_key("a b") == '"a b"'
    for key in ("a.b", "", "a b", "é", 'q"uote'):
        assert tomllib.loads(f"{toml_key(key)} = 1")[key] == 1


def test_none_in_a_table_is_left_out() -> None:
    assert read_back({"steps": 10, "restarts": None}) == {"steps": 10}
    assert toml_value({"only": None}) == "{}"


@pytest.mark.parametrize(
    ("v", "message"),
    [
        (None, "has no null"),
        ([1, None], "has no null"),
        (2**63, "64-bit integers only"),
        ("bad \udc80 byte", "lone surrogate U\\+DC80"),
        ({1: "x"}, "keys are strings"),
        (object(), "cannot write the object value"),
        ({1, 2}, "cannot write the set value"),
        (dt.time(1, 2, tzinfo=dt.timezone.utc), "no UTC offset"),
    ],
)
def test_unwritable_values_fail_with_one_clear_line(v: Any, message: str) -> None:
    with pytest.raises(GridError, match=message) as err:
        toml_value(v)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("grid", sorted(Path(__file__).resolve().parent.parent.joinpath("grids").glob("*.toml")), ids=lambda p: p.stem)
def test_builtin_grids_written_back_by_submit_read_back_equal(grid: Path) -> None:
    """`harness submit` rewrites a grid with this writer: every built-in grid survives the trip."""
    from harness.submission.submit import to_toml

    raw = tomllib.loads(grid.read_text())
    assert tomllib.loads(to_toml(raw)) == raw
