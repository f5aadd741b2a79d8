"""Least privilege in the database: password authentication, the services' roles, and a
query API that cannot write. Against the session's real PostgreSQL (the devstack's:
scram-sha-256, roles made by runstream/devstack/postgres.py, grants by migration 0008)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psycopg
import pytest
from psycopg import errors, sql

from runstream.settings import Settings
from tests.support.waiting import wait_for


def without_password(url: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    auth = f"{user}:{password}" if password is not None else user
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.hostname}:{parts.port}"))


def test_connections_need_the_password(settings: Settings) -> None:
    for url in (settings.database_url, settings.api_database_url):
        for bad in (without_password(url), without_password(url, "wrong")):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(bad, connect_timeout=5).close()
        psycopg.connect(url, connect_timeout=5).close()
    for role in ("postgres", "runstream"):  # no trust fallback for any role, the superuser's included
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(without_password(settings.database_url).replace("runstream@", f"{role}@", 1),
                            connect_timeout=5).close()


def test_the_services_roles_are_not_superusers(settings: Settings) -> None:
    for url in (settings.database_url, settings.api_database_url):
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
            assert row == (False, False), url


API_WRITES = {"seq_allocations": ("INSERT", "UPDATE")}
"""What the API's role may change: the seq counters of the events it writes itself (migration 0010)."""


def test_the_api_role_reads_every_table_and_writes_only_its_seq_counters(settings: Settings, db: Any) -> None:
    tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    assert {"runs", "events", "metric_points", "schema_migrations"} <= set(tables)
    with psycopg.connect(settings.api_database_url) as conn:
        for table in tables:
            name = sql.Identifier(table)
            column = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum LIMIT 1", (table,)).fetchone()[0]
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(name))
            conn.rollback()
            for statement in (
                sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name),
                sql.SQL("UPDATE {} SET {} = {}").format(name, sql.Identifier(column), sql.Identifier(column)),
                sql.SQL("DELETE FROM {}").format(name),
                sql.SQL("TRUNCATE {}").format(name),
                sql.SQL("ALTER TABLE {} ADD COLUMN x int").format(name),
                sql.SQL("DROP TABLE {}").format(name),
            ):
                if statement.as_string(conn).split()[0] in API_WRITES.get(table, ()):
                    continue  # allowed (checked below)
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(statement)
                conn.rollback()
        grants = {(r[0], r[1]) for r in db.execute(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'runstream_reader' AND privilege_type <> 'SELECT'")}
        assert grants == {(t, p) for t, ps in API_WRITES.items() for p in ps}
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.planted (x int)")
        conn.rollback()
        conn.execute("LISTEN runstream_runs")  # what the live endpoint and the cache need


async def test_the_running_api_connects_as_the_reader(services: Settings, db: Any) -> None:
    async with aiohttp.ClientSession() as session, session.get(services.api_url + "/api/experiments") as resp:
        assert resp.status == 200
    reader = urlsplit(services.api_database_url).username

    def roles() -> set[str]:
        rows = db.execute("SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name LIKE "
                          "'runstream-query-api%%'").fetchall()
        return {r[0] for r in rows}

    assert wait_for(roles, what="the API's connections") == {reader}
