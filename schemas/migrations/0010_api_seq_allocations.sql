-- The query API writes events of its own (the MLflow tracking API, run management: see
-- query_api/writes.py) and numbers them from `seq_allocations`, one row per run or
-- experiment stream advanced atomically. That table is the one thing its role
-- (`runstream_reader`, migration 0008: SELECT on everything else) may change: INSERT a
-- stream's row and UPDATE its counters. No DELETE, no other table. Without the role this
-- migration does nothing.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runstream_reader') THEN
        GRANT INSERT, UPDATE ON seq_allocations TO runstream_reader;
    END IF;
END
$$;
