"""Where the project's files outside the package live: built-in grids, templates, examples, published models."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GRIDS_DIR = REPO / "grids"
TEMPLATES_DIR = REPO / "templates"
EXAMPLES_DIR = REPO / "examples"
CHECKPOINTS_DIR = REPO / "checkpoints"  # dense models the project trained and published (harness.engine.published)
