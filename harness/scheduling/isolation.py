"""Process-level isolation for code the harness did not write: memory limit, results-DB guard, optional sandbox.

None of this is a security sandbox. A memory limit and an audit hook stop honest mistakes (a runaway allocation,
a plugin that opens `results.db`); code that wants to escape can (ctypes, a child process). `enter_sandbox` adds
kernel-enforced limits where Linux allows unprivileged user namespaces: no network, and chosen paths read-only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Linux constants (sched.h, sys/mount.h); ctypes because Python 3.11 has no os.unshare or os.mount.
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
# statvfs flags that a read-only remount must repeat (the kernel refuses to drop "locked" flags in a user namespace).
_KEEP_FLAGS = {MS_NOSUID: MS_NOSUID, MS_NODEV: MS_NODEV, MS_NOEXEC: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME, 4096: MS_RELATIME}

# Left writable inside the sandbox: device nodes (/dev/null), and the kernel's own views.
KERNEL_MOUNTS = ("/proc", "/sys", "/dev")

_violations: list[str] = []


class SandboxUnavailable(OSError):
    """The platform refuses the namespaces `enter_sandbox` needs."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, so an abandoned check stops computing."""
    try:
        _libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def vm_bytes() -> int:
    """This process's current virtual memory size (what RLIMIT_AS counts)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def limit_memory(extra_mb: int) -> int:
    """Cap the address space at its current size plus `extra_mb` MiB; returns the cap in bytes.

    Counting from the current size makes the budget mean "what the plugin may allocate" rather than
    including torch's own multi-GiB address-space reservations, which vary by build.
    """
    cap = vm_bytes() + extra_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def is_memory_error(exc: BaseException) -> bool:
    """An allocation refused by the memory cap: Python's MemoryError or torch's allocator error."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


def _protected_set(paths: Iterable[str | Path]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        base = os.path.realpath(p)
        # SQLite's side files are the database too.
        out |= {base, base + "-wal", base + "-shm", base + "-journal"}
    return out


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_NETWORK_EVENTS = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname")


def _writes(event: str, args: tuple[Any, ...]) -> bool:
    """Whether an 'open'-like audit event asks for write access."""
    if event != "open":
        return event in ("os.remove", "os.rename", "os.truncate", "os.mkdir", "os.rmdir", "os.chmod", "os.symlink", "os.link", "shutil.copyfile", "shutil.rmtree")
    mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return bool(isinstance(flags, int) and flags & _WRITE_FLAGS)


def guard_paths(paths: Iterable[str | Path], writable: Iterable[str | Path] | None = None) -> None:
    """Refuse (PermissionError) and record any open or sqlite3.connect of the given files, e.g. the results DB.

    With `writable` given, also refuse and record any write outside those folders (and /dev) and any network
    use (IP sockets, name lookups): what a submission's check has no reason to do. Python's audit hooks see
    only Python-level calls; the kernel sandbox is what holds against ctypes and child processes.
    """
    protected = _protected_set(paths)
    roots = None if writable is None else [os.path.realpath(w) for w in writable] + ["/dev"]

    def refuse(what: str, path: str = "") -> None:
        _violations.append(what)
        raise PermissionError(errno.EACCES, f"refused by the harness: {what}", path or None)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if roots is not None and event.startswith("socket."):
            if event in _NETWORK_EVENTS or (event == "socket.__new__" and len(args) > 1 and args[1] in (socket.AF_INET, socket.AF_INET6)):
                refuse(f"network access ({event})")
            return
        if event not in ("open", "sqlite3.connect", "os.remove", "os.rename", "os.truncate") and not (roots is not None and _writes(event, args)):
            return
        target = args[0] if args else None
        if isinstance(target, int) or target is None:
            return
        try:
            path = os.path.realpath(os.fsdecode(target))
        except (TypeError, ValueError):
            return
        if path in protected:
            _violations.append(f"{event} {path}")
            raise PermissionError(errno.EACCES, "plugins may not touch the results database; results reach it only through the harness", path)
        if roots is not None and _writes(event, args) and not _under(path, roots):
            refuse(f"writing {path}", path)

    sys.addaudithook(hook)


def violations() -> list[str]:
    """What `guard_paths` refused so far in this process (a plugin may have caught the PermissionError)."""
    return list(_violations)


def _mount(libc: Any, src: str | None, target: str, flags: int) -> None:
    if libc.mount(src.encode() if src else None, target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(err, f"mount {target}: {os.strerror(err)}")


def _mount_points() -> list[str]:
    """Every mount point this process sees, parents before children (from /proc/self/mountinfo)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        # mountinfo escapes space, tab, newline and backslash as octal.
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return list(dict.fromkeys(points))


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _remount_read_only(libc: Any, p: str) -> None:
    keep = 0
    f_flag = os.statvfs(p).f_flag
    for st, ms in _KEEP_FLAGS.items():
        if f_flag & st:
            keep |= ms
    _mount(libc, None, p, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def enter_sandbox(read_only: Iterable[str | Path] = (), writable: Iterable[str | Path] | None = None) -> None:
    """Move this single-threaded process (call it before torch starts threads) into new user, mount and network namespaces.

    No network: the new network namespace has no interface up, so every IP connection fails. With `writable`
    given, every mounted file system becomes read-only except the `writable` folders (and the kernel's /proc,
    /sys and /dev); otherwise only the `read_only` paths do. The bind mounts hold even against code that
    bypasses Python (ctypes, subprocesses), for this process and its children only. It does not hide files
    from reading, limit CPU, or block Unix-domain sockets that already exist on disk.
    """
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(err, f"unshare: {os.strerror(err)} (unprivileged user namespaces disabled?)")
    # Map our own ids, so files keep their owners; the capabilities to mount come with the new namespace.
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    if writable is None:
        for p in dict.fromkeys(os.path.realpath(x) for x in read_only):
            if os.path.exists(p):
                _mount(libc, p, p, MS_BIND | MS_REC)
                _remount_read_only(libc, p)
        return
    keep_rw = list(dict.fromkeys(os.path.realpath(x) for x in writable if os.path.isdir(x)))
    for p in keep_rw:  # their own mounts first, so the read-only pass below can skip them
        _mount(libc, p, p, MS_BIND | MS_REC)
    for p in _mount_points():
        if _under(p, KERNEL_MOUNTS) or _under(p, keep_rw) or not os.path.isdir(p):
            continue
        _remount_read_only(libc, p)


def sandbox_available() -> bool:
    """Whether `enter_sandbox` works here, tried in a fresh interpreter that loads only this file.

    Not a fork of the caller: after torch has set its thread count, a forked child starts with an extra thread,
    and the kernel refuses a new user namespace to a multithreaded process.
    """
    if not sys.platform.startswith("linux"):
        return False
    probe = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('isolation', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.enter_sandbox([])"
    )
    try:
        done = subprocess.run([sys.executable, "-S", "-c", probe, __file__], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


# ---------------------------------------------------------------- sandboxed worker processes


def write_launcher(script: Path, workdir: Path, writable: Iterable[str | Path]) -> Path:
    """An executable that enters the sandbox (all read-only but `writable`, no network), moves into `workdir`, then runs Python.

    Worker processes are started through it (see `spawn_executable`): the sandbox must be entered before torch
    starts its threads, and `import harness` imports torch, so the namespaces are made by this small launcher
    and inherited across exec. `script` must not be writable inside the sandbox, or a worker could rewrite the
    launcher of the next one.
    """
    args = [sys.executable, "-S", __file__, "--workdir", str(workdir)]
    for w in writable:
        args += ["--writable", str(w)]
    script = Path(script)
    script.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in args) + ' -- "$@"\n')
    script.chmod(0o755)
    return script


@contextmanager
def spawn_executable(launcher: Path | None) -> Iterator[None]:
    """While inside, multiprocessing's spawn starts children through `launcher` (no-op for None)."""
    if launcher is None:
        yield
        return
    from multiprocessing import spawn

    previous = spawn.get_executable()
    spawn.set_executable(str(launcher))
    try:
        yield
    finally:
        spawn.set_executable(previous)


def _launch(argv: list[str]) -> None:
    """`python -S isolation.py --workdir D [--writable W]... -- ARGS`: sandbox, chdir, exec Python with ARGS."""
    split = argv.index("--")
    opts, rest = argv[:split], argv[split + 1 :]
    workdir = opts[opts.index("--workdir") + 1]
    writable = [opts[i + 1] for i, a in enumerate(opts) if a == "--writable"]
    enter_sandbox(writable=[workdir, *writable])
    os.chdir(workdir)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    os.execv(sys.executable, [sys.executable, *rest])


if __name__ == "__main__":
    _launch(sys.argv[1:])
