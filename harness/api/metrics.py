"""One measured value of a job, as every stage reports it and the store records it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A metric value to record."""

    metric: str
    value: float
    attack: str = ""
    eps: float = -1.0
