"""The `harness db` commands: schema version of a results database, and its explicit upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from harness.api.errors import HarnessError

db_app = typer.Typer(help="Results-database maintenance: schema version and upgrade.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@db_app.command()
def upgrade(db: Annotated[Path, typer.Option("--db", help="Results database (SQLite).")] = Path("results.db")) -> None:
    """Migrate a database written by an older harness to this harness's schema, after copying it to a backup."""
    from harness.store.schema import upgrade as do_upgrade

    try:
        before, after, backup = do_upgrade(db)
    except HarnessError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if backup is None:
        console.print(f"{db} is already at schema version {after}; nothing to do.", highlight=False)
    else:
        console.print(f"upgraded {db} from schema version {before} to {after}; the old file is kept as {backup}", highlight=False, soft_wrap=True)


@db_app.command()
def version(db: Annotated[Path, typer.Option("--db", help="Results database (SQLite).")] = Path("results.db")) -> None:
    """Print the schema version of a database and the one this harness uses."""
    from harness.store.schema import SCHEMA_VERSION, DatabaseFileError, probe

    if not db.exists():
        err.print(f"[bold red]error:[/] No results database at {db}.", highlight=False)
        raise typer.Exit(1)
    try:
        v = probe(db)
    except DatabaseFileError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    note = "current" if v == SCHEMA_VERSION else f"run `harness db upgrade --db {db}`"
    console.print(f"{db}: schema version {v}; this harness uses {SCHEMA_VERSION} ({note})", highlight=False)
