"""The test suite (a package, so that `tests.conftest` is this one even where another distribution ships a top-level `tests`)."""
