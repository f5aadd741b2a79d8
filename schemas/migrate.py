"""Apply the numbered SQL migrations in ``schemas/migrations`` (psycopg, one command).

A migration whose first line is ``-- runstream: requires timescaledb`` is applied only
where the timescaledb extension is available; elsewhere it stays pending, so the same
database gains hypertables the day the extension appears. Applied versions are recorded
in ``schema_migrations``. Each migration runs in its own transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_REQUIRES_TIMESCALE = "-- runstream: requires timescaledb"
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def requires_timescaledb(self) -> bool:
        return self.sql.startswith(_REQUIRES_TIMESCALE)


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    pending: list[str]
    timescaledb: bool


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, in version order; a badly named file is an error."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


def timescaledb_available(conn: psycopg.Connection) -> bool:
    """True when the server can load TimescaleDB (installed or installable)."""
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> MigrationReport:
    """Apply every pending migration that this server can run; report what happened."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # One migrator at a time (several processors may start together).
        conn.execute("SELECT pg_advisory_lock(7262010)")
        try:
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            timescale = timescaledb_available(conn)
            applied, pending = [], []
            for m in load_migrations(directory):
                label = f"{m.version:04d}_{m.name}"
                if m.version in done:
                    continue
                if m.requires_timescaledb and not timescale:
                    pending.append(label)
                    continue
                with conn.transaction():
                    conn.execute(m.sql)  # type: ignore[arg-type]
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (m.version, m.name),
                    )
                applied.append(label)
        finally:
            conn.execute("SELECT pg_advisory_unlock(7262010)")
    return MigrationReport(applied, pending, timescale)
