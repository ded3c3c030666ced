"""Versioned schema: SQL files applied in order, each exactly once.

A file ``NNNN_description.sql`` is migration ``NNNN``. The applied versions
are recorded in ``schema_migrations``; each migration and its record commit in
one transaction, so a failed migration leaves the schema at the previous
version.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load() -> list[Migration]:
    migrations = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            migrations.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(migrations, key=lambda m: m.version)


def apply_sqlite(conn: sqlite3.Connection, now_ms: int) -> list[int]:
    """Bring a SQLite database up to date; returns the versions applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for migration in load():
        if migration.version in done:
            continue
        conn.executescript(
            "BEGIN;\n"
            f"{migration.sql}\n"
            f"INSERT INTO schema_migrations (version, name, applied_at) VALUES "
            f"({migration.version}, '{migration.name}', {now_ms});\n"
            "COMMIT;"
        )
        applied.append(migration.version)
    return applied
