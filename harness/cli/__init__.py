"""The `harness` command line: thin commands over the library; only this layer turns errors into exit codes."""

from harness.cli.main import app, main

__all__ = ["app", "main"]
