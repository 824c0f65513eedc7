"""Measured model cost: parameters, MACs, nonzero weights, file size and latency."""

from __future__ import annotations

import io
import statistics
import time

import torch
import torch_pruning as tp
from torch import nn


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Parameters that are not exactly zero (what unstructured pruning lowers)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on a single example."""
    macs, _ = tp.utils.count_ops_and_params(model, example[:1])
    return int(macs)


def file_size(model: nn.Module) -> int:
    """Bytes of the saved state dict."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def latency_ms(model: nn.Module, example: torch.Tensor, batch: int, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of one forward pass on `batch` copies of `example`, in milliseconds."""
    x = example[:1].expand(batch, *example.shape[1:]).contiguous()
    # Synchronise the model's own device, not whichever device happens to be current in this process.
    sync = (lambda: torch.cuda.synchronize(x.device)) if x.is_cuda else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
