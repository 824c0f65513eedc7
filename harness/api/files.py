"""Atomic file writes: a temporary file in the same folder, fsynced, then renamed over the target."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from harness.api.errors import HarnessError


class WriteError(HarnessError):
    """A file that could not be written (full disk, no permission); the previous version is left intact."""

    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], durable: bool = True) -> Path:
    """Call `write` on a temporary file beside `path`, then rename it into place; on failure remove the temporary.

    Readers see either the old file or the complete new one, never a truncated mix, even when the disk fills.
    `durable` also fsyncs before the rename, so a power cut cannot leave an empty file (what a checkpoint needs;
    thousands of regenerable site pages skip it).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(exc.errno or 0, f"cannot write {path}: {_why(exc)}; nothing was changed") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(exc.errno or 0, f"cannot write {path}: {_why(exc)}; the previous version is left intact") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data), durable)


def check_writable(path: str | Path, what: str, folder: bool = True) -> None:
    """HarnessError naming the option `what` unless `path` (a folder; with folder=False a file) can be made: no file in the way, a writable folder above."""
    path = Path(path)
    probe = path if folder else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise HarnessError(f"{what} {path}: {probe} is a file, not a folder; pass another {what}.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise HarnessError(f"{what} {path}: cannot write in {probe} (permission denied); pass another {what}.")
