-- Event bodies above ~2 kB (a batch of points) are compressed by TOAST. The default
-- method, pglz, was the largest single cost of archiving batched events (about 1.8 s of
-- PostgreSQL CPU per 21 MB of event JSON, against 0.24 s for lz4, which also reads back
-- faster for replay). lz4 needs PostgreSQL 14+ built with it (Debian's and the
-- TimescaleDB image's are); elsewhere the column keeps pglz and this says so.
-- Rows already stored keep their method; new rows get lz4.
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 140000 THEN
        BEGIN
            EXECUTE 'ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4';
        EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
            RAISE WARNING 'events.body keeps the default TOAST compression: %', SQLERRM;
        END;
    END IF;
END $$;
