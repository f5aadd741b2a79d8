"""Numbered migrations: applied once, recorded; the TimescaleDB one applied where the extension
is available and pending elsewhere (both kinds of server are checked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from runstream.schemas.migrate import load_migrations, migrate
from runstream.settings import Settings
from tests.support.pglite import PgliteServer, node_available

AVAILABLE = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"


def test_migrations_are_numbered_in_order_and_the_timescale_one_is_marked() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert [m.name for m in migrations if m.requires_timescaledb] == ["timescale"]


def test_a_badly_named_migration_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "1_core.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="is not named NNNN_name.sql"):
        load_migrations(tmp_path)


def assert_migrated_for_this_server(database_url: str) -> None:
    """Migrating again changes nothing, and what was applied follows whether this server
    can load TimescaleDB: with it every migration ran and three tables are hypertables;
    without it 0002_timescale stays pending and the extension is not created."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        available = conn.execute(AVAILABLE).fetchone() is not None
    report = migrate(database_url)
    assert report.applied == []
    assert report.timescaledb is available
    with psycopg.connect(database_url, autocommit=True) as conn:
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
        if available:
            assert report.pending == []
            assert recorded == [1, 2, 3, 4, 5, 6]
            assert installed
            hypertables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
            assert hypertables == {"metric_points", "table_rows", "events"}
        else:
            assert report.pending == ["0002_timescale"]
            assert recorded == [1, 3, 4, 5, 6]  # 0003 to 0006 run everywhere
            assert not installed


def test_migrating_again_is_a_no_op_and_timescale_follows_the_extension(settings: Settings) -> None:
    assert_migrated_for_this_server(settings.database_url)


@pytest.mark.skipif(not node_available(), reason="node and npm are needed for the PGlite TimescaleDB server")
def test_on_a_server_with_timescaledb_the_timescale_migration_is_applied(pg: PgliteServer) -> None:
    assert_migrated_for_this_server(pg.dsn)


def test_event_bodies_are_compressed_with_lz4(db: Any) -> None:
    """Debian's PostgreSQL has lz4: the archive's bodies use it (pglz cost the most CPU)."""
    method = db.execute("SELECT attcompression FROM pg_attribute "
                        "WHERE attrelid = 'events'::regclass AND attname = 'body'").fetchone()[0]
    assert method == "l"
