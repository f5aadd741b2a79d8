-- runstream: requires timescaledb
-- Hypertables and compression for the three append-only tables. Applied only where the
-- timescaledb extension is available; elsewhere it stays pending and the tables stay
-- plain (same columns, same indexes, same queries).
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('metric_points', 'ts', chunk_time_interval => INTERVAL '1 day', migrate_data => true);
SELECT create_hypertable('table_rows', 'ts', chunk_time_interval => INTERVAL '7 days', migrate_data => true);
SELECT create_hypertable('events', 'ts', chunk_time_interval => INTERVAL '1 day', migrate_data => true);

ALTER TABLE metric_points SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'run_id, name',
    timescaledb.compress_orderby = 'step'
);
ALTER TABLE table_rows SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'run_id, name',
    timescaledb.compress_orderby = 'seq, idx'
);
ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'run_id',
    timescaledb.compress_orderby = 'seq'
);

SELECT add_compression_policy('metric_points', INTERVAL '7 days');
SELECT add_compression_policy('table_rows', INTERVAL '7 days');
SELECT add_compression_policy('events', INTERVAL '7 days');
