"""Where a result came from: versions, commit, device, and the exact plugin code."""

from __future__ import annotations

import functools
import platform
import subprocess
from typing import Any

import torch

import harness
from harness.api.paths import REPO


@functools.cache
def git_commit() -> str | None:
    """Commit of the harness checkout (with '-dirty' when it has local changes), if it is one."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None


def device_name(device: torch.device) -> str:
    """Human name of the device (GPU model or CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Software and hardware that a run used."""
    return {
        "harness": harness.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "torch_pruning": _version("torch_pruning"),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "host": platform.node(),
    }
