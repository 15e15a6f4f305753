"""The schema migrations shipped with the portal: `<package>/migrations/NNNN_name.sql` files.

Shared by both engines (SQLite's in portal/storage/migrations, PostgreSQL's in
portal/storage/postgres/migrations); how each applies them and where it records its version
stays with the engine (sqlite/schema.py, postgres/schema.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import resources

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def read_migrations(package: str) -> list[tuple[int, str]]:
    """Return the .sql files in `package`'s migrations folder as ordered (version, script) pairs.

    ValueError for a file not named NNNN_name.sql or versions that do not run 1, 2, 3 ...
    """
    folder = resources.files(package).joinpath("migrations")
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return checked_migrations(found)


def checked_migrations(migrations: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """Return (version, script) pairs in order; ValueError unless versions run 1, 2, 3 ..."""
    ordered = sorted(migrations, key=lambda migration: migration[0])
    versions = [version for version, _ in ordered]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must run 1, 2, 3 ... without gaps, got {versions}")
    return ordered
