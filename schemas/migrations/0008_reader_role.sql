-- Least privilege: the query API connects as `runstream_reader`, which may read every
-- table and nothing else (no INSERT, UPDATE, DELETE, TRUNCATE, no DDL). The role is
-- created by whoever sets the database up (the devstack does: runstream/devstack/postgres.py;
-- elsewhere: CREATE ROLE runstream_reader LOGIN PASSWORD '...', then `runstream migrate`).
-- Without the role this migration does nothing. Tables created later by the role that
-- runs the migrations get the same grant through its default privileges, in every schema:
-- `runstream replay` builds its tables in a schema of its own and moves them into public
-- (a table keeps its grants when it moves). Runs on plain PostgreSQL and TimescaleDB (which
-- copies a hypertable's grants to its chunks).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runstream_reader') THEN
        GRANT USAGE ON SCHEMA public TO runstream_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO runstream_reader;
        ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO runstream_reader;
    END IF;
END
$$;
