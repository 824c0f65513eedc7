"""One measured value of a job, as every stage reports it and the store records it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class Metric:
    """A metric value to record, with the per-example outcomes behind it when it is an accuracy."""

    metric: str
    value: float
    attack: str = ""
    eps: float = -1.0
    # Which evaluation examples were correct (bit i = example i, packed, see pack_outcomes); paired tests use them.
    outcomes: bytes | None = None
    n_examples: int = 0


def pack_outcomes(mask: Tensor) -> tuple[bytes, int]:
    """A bool vector as packed bits (8 examples per byte) and its length."""
    bits = mask.detach().cpu().numpy().astype(bool)
    return np.packbits(bits).tobytes(), len(bits)


def unpack_outcomes(data: bytes, n: int) -> np.ndarray:
    """The bool vector pack_outcomes stored."""
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)
