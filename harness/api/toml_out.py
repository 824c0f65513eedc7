"""Writing TOML values (the standard library only reads TOML): the one writer for every grid file the harness writes."""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from typing import Any

from harness.api.errors import GridError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_INT64 = (-(2**63), 2**63 - 1)


def toml_string(s: str) -> str:
    """A TOML basic string, all ASCII: quotes, backslashes, control and non-ASCII characters escaped.

    ASCII output reads back the same whatever encoding the file is written in.
    """
    out = []
    for ch in s:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate (e.g. from a mis-decoded file name) is no character
            raise GridError(f"cannot write {s!r} to TOML: it holds the lone surrogate U+{code:04X}; fix the text's encoding.")
        else:
            out.append(f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}")
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    """A key as written left of `=`: bare when TOML allows it, else quoted."""
    if not isinstance(key, str):
        raise GridError(f"cannot write the key {key!r} to TOML: keys are strings.")
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(v: Any) -> str:
    """The TOML text of a value, such that `tomllib` reads back an equal value.

    Booleans, integers (64-bit), floats (inf and nan included), strings, dates and times, lists and tuples
    (arrays), dicts (inline tables). TOML has no null: a dict entry that is None is left out, so whoever
    reads the file takes its default; None anywhere else is an error.
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        n = int(v)
        if not _INT64[0] <= n <= _INT64[1]:
            raise GridError(f"cannot write the integer {n} to TOML: it holds 64-bit integers only; write it as a float or a string.")
        return str(n)
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return repr(x)  # the shortest text that reads back as the same double, always with '.' or 'e'
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, dt.time) and v.tzinfo is not None:
        raise GridError(f"cannot write the time {v} to TOML: a time of day has no UTC offset there; use a datetime.")
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if v is None:
        raise GridError("cannot write None to TOML: it has no null; leave the entry out to take its default.")
    raise GridError(f"cannot write the {type(v).__name__} value {v!r} to TOML; use a number, string, boolean, list or table.")
