-- Rollups of metric_points, kept by the processors in the same transaction as the points:
-- per (run, metric, level, block of 2^shift steps) the point count and the (value, step)
-- of the block's minimum and maximum in PostgreSQL's float order (NaN highest; on equal
-- values the lowest step for the minimum, the highest for the maximum). The query API
-- downsamples a long range from these rows instead of from every point
-- (query_api.queries.VECTOR_ROLLUP_BUCKETS). Levels: processors.columnar.ROLLUP_SHIFTS.
-- lo/hi are NULL while a block holds only strings (n_text counts those).
CREATE TABLE metric_rollups (
    run_id      uuid             NOT NULL,
    name        text             NOT NULL,
    shift       smallint         NOT NULL,
    block       bigint           NOT NULL,
    n           bigint           NOT NULL,
    n_text      bigint           NOT NULL,
    lo_value    double precision,
    lo_step     bigint,
    hi_value    double precision,
    hi_step     bigint,
    PRIMARY KEY (run_id, name, shift, block)
);

-- Backfill from the points already stored (steps travel through float8 plus an exact
-- remainder, so steps above 2^53 survive the array comparison).
INSERT INTO metric_rollups (run_id, name, shift, block, n, n_text, lo_value, lo_step, hi_value, hi_step)
SELECT run_id, name, shift, block, n, n_text,
       lo[1], lo[2]::bigint + lo[3]::bigint, hi[1], hi[2]::bigint + hi[3]::bigint
FROM (
    SELECT p.run_id, p.name, l.shift, p.step >> l.shift AS block, count(*) AS n,
           count(*) FILTER (WHERE p.kind = 3) AS n_text,
           min(ARRAY[p.value, p.step::float8, (p.step - p.step::float8::bigint)::float8]) FILTER (WHERE p.kind <> 3) AS lo,
           max(ARRAY[p.value, p.step::float8, (p.step - p.step::float8::bigint)::float8]) FILTER (WHERE p.kind <> 3) AS hi
    FROM metric_points p CROSS JOIN (VALUES (4), (8), (12)) AS l(shift)
    GROUP BY p.run_id, p.name, l.shift, p.step >> l.shift
) AS g;
