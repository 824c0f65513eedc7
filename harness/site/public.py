"""What the published site may say about where code and data came from: no path of the machine that built it.

Provenance records absolute paths (a plugin's source file, a dataset folder). Published, they leak the building
machine's layout and mean nothing to a reader. Sources inside the repository become repo-relative paths (linked to
the repository at the recorded commit when a repository URL is configured); files outside it, such as submitted
pruners, are named by their sha256; any other absolute path is replaced by a placeholder.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

# Top-level folders of the repository: a recorded path that contains one of these is a file of the repo.
REPO_FOLDERS = ("registry", "harness", "grids", "examples", "benchmarks", "templates", "tests")
LOCAL = "(local path)"
# An absolute POSIX or Windows path, or one under the home dir; URLs (scheme://) are left alone.
_ABS = re.compile(r"(?<![\w:/.])(?:~|[A-Za-z]:\\|/)(?:[\w.@+=-]+[/\\])*[\w.@+=-]*")
REPO_URL_ENV = "HARNESS_REPO_URL"
SUBMISSIONS = "registry/submissions/"  # where `harness submit` records entries: named by sha256, never by path


def repo_relative(path: str) -> str | None:
    """`registry/pruners/hrank.py` for any recorded path that runs through a repository folder, else None."""
    parts = re.split(r"[/\\]", path)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in REPO_FOLDERS and i < len(parts) - 1 and "site-packages" not in parts[:i]:
            return "/".join(parts[i:])
    return None


def source_label(path: str, sha256: str = "") -> str:
    """How a plugin's source file is named in public: repo-relative, else by its sha256."""
    if not path or path.startswith("<"):
        return path or ""
    rel = repo_relative(path)
    if rel is not None and not rel.startswith(SUBMISSIONS):
        return rel
    if "site-packages" in path:
        return "installed package: " + path.replace("\\", "/").split("site-packages/", 1)[1]
    if rel is not None:
        return f"submitted file with sha256 {sha256}" if sha256 else "submitted file"
    return f"file with sha256 {sha256}" if sha256 else LOCAL


def source_link(path: str, commit: str | None, repo_url: str | None = None) -> str | None:
    """URL of a repo-relative source at a commit, when a repository URL is configured (argument or environment)."""
    repo_url = repo_url or os.environ.get(REPO_URL_ENV) or ""
    rel = repo_relative(path) if path else None
    if rel is not None and rel.startswith(SUBMISSIONS):  # submitted files are recorded locally, not committed
        return None
    if not repo_url.startswith("https://") or rel is None or not commit or not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return None
    return f"{repo_url.rstrip('/')}/blob/{commit}/{rel}"


@functools.lru_cache(maxsize=65536)  # provenance repeats the same strings in every job
def scrub_text(text: str) -> str:
    """A string with every absolute path replaced: repo-relative where possible, else a placeholder."""
    if "/" not in text and "\\" not in text and "~" not in text:
        return text
    return _ABS.sub(lambda m: (repo_relative(m.group(0)) or LOCAL) if len(m.group(0)) > 1 else m.group(0), text)


def scrub(obj: Any, key: str = "") -> Any:
    """A copy of JSON-like data with no absolute path in it; `source` entries keep their sha256 name."""
    if isinstance(obj, dict):
        if isinstance(obj.get("source"), str) and "sha256" in obj:
            obj = {**obj, "source": source_label(obj["source"], str(obj.get("sha256") or ""))}
        return {k: scrub(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, key) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj) if len(obj) < 4096 else _ABS.sub(lambda m: repo_relative(m.group(0)) or LOCAL, obj)
    return obj
