"""`python -m harness` runs the CLI."""

from harness.cli.main import main

main()
