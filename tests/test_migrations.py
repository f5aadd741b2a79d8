"""Numbered migrations: applied once, recorded, TimescaleDB-only ones pending on plain PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runstream.settings import Settings
from schemas.migrate import load_migrations, migrate


def test_migrations_are_numbered_in_order_and_the_timescale_one_is_marked() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert [m.name for m in migrations if m.requires_timescaledb] == ["timescale"]


def test_a_badly_named_migration_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "1_core.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="is not named NNNN_name.sql"):
        load_migrations(tmp_path)


def test_migrating_again_is_a_no_op_and_timescale_stays_pending_without_the_extension(settings: Settings, db: Any) -> None:
    report = migrate(settings.database_url)
    assert report.applied == []
    assert report.timescaledb is False
    assert report.pending == ["0002_timescale"]
    recorded = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == [1, 3, 4, 5]  # 0003_metric_rollups, 0004_events_lz4 and 0005_dead_letter_detail run everywhere


def test_event_bodies_are_compressed_with_lz4(db: Any) -> None:
    """Debian's PostgreSQL has lz4: the archive's bodies use it (pglz cost the most CPU)."""
    method = db.execute("SELECT attcompression FROM pg_attribute "
                        "WHERE attrelid = 'events'::regclass AND attname = 'body'").fetchone()[0]
    assert method == "l"
