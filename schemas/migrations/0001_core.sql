-- Core tables. Runs on plain PostgreSQL; 0002 turns the big ones into hypertables
-- when TimescaleDB is available.

-- The raw event archive: the log beyond Kafka's retention, and the dedup authority.
-- (run_id, seq) identifies an event; ts is in the key because TimescaleDB requires the
-- partitioning column in every unique index. The SDK stamps ts once per event, so a
-- redelivered or re-sent event carries the same key.
CREATE TABLE events (
    run_id      uuid        NOT NULL,
    seq         bigint      NOT NULL,
    ts          timestamptz NOT NULL,
    type        text        NOT NULL,
    v           smallint    NOT NULL,
    event_id    uuid        NOT NULL,
    body        bytea       NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    PRIMARY KEY (run_id, seq, ts)
);

-- One row per logged value. kind: 0 float, 1 int, 2 bool, 3 string (in "text").
CREATE TABLE metric_points (
    run_id  uuid             NOT NULL,
    name    text             NOT NULL,
    step    bigint           NOT NULL,
    ts      timestamptz      NOT NULL,
    value   double precision,
    text    text,
    kind    smallint         NOT NULL
);
CREATE INDEX metric_points_run_name_step ON metric_points (run_id, name, step);

-- Rows of multi-column metrics (log_row, log_table). cells is a JSON object whose
-- values use the schemas.values encoding (non-finite floats as {"f": ...}).
CREATE TABLE table_rows (
    run_id  uuid        NOT NULL,
    name    text        NOT NULL,
    seq     bigint      NOT NULL,
    idx     integer     NOT NULL,
    ts      timestamptz NOT NULL,
    cells   jsonb       NOT NULL
);
CREATE INDEX table_rows_run_name ON table_rows (run_id, name, seq, idx);

CREATE TABLE log_lines (
    run_id  uuid        NOT NULL,
    seq     bigint      NOT NULL,
    idx     integer     NOT NULL,
    ts      timestamptz NOT NULL,
    stream  text        NOT NULL,
    line    text        NOT NULL
);
CREATE INDEX log_lines_run ON log_lines (run_id, seq, idx);

-- Projections.
CREATE TABLE experiments (
    name        text        PRIMARY KEY,
    created_at  timestamptz NOT NULL
);

CREATE TABLE runs (
    run_id          uuid        PRIMARY KEY,
    experiment      text        NOT NULL,
    name            text,
    parent_run_id   uuid,
    kind            text        NOT NULL,
    status          text        NOT NULL,
    error           text,
    properties      jsonb       NOT NULL DEFAULT '{}',
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    updated_at      timestamptz NOT NULL,
    last_seq        bigint      NOT NULL
);
CREATE INDEX runs_experiment_started ON runs (experiment, started_at DESC);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

CREATE TABLE tags (
    run_id      uuid        NOT NULL,
    key         text        NOT NULL,
    value       text,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX tags_key_value ON tags (key, value);

CREATE TABLE artifacts (
    run_id          uuid        NOT NULL,
    path            text        NOT NULL,
    sha256          text        NOT NULL,
    size            bigint      NOT NULL,
    content_type    text        NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (run_id, path)
);

-- Per run and name: what get_metrics and "best run by metric" need without a scan.
-- kind: 'scalar' (run.log), 'list' (log_list), 'table' (log_row/log_table), 'image'.
-- min/max ignore NaN; last_* is the value of the highest (seq, position) seen.
CREATE TABLE metric_summaries (
    run_id          uuid             NOT NULL,
    name            text             NOT NULL,
    kind            text             NOT NULL,
    description     text,
    count           bigint           NOT NULL,
    last_seq        bigint           NOT NULL,
    last_step       bigint,
    last_value      double precision,
    last_text       text,
    last_kind       smallint,
    min_value       double precision,
    max_value       double precision,
    updated_at      timestamptz      NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX metric_summaries_name_last ON metric_summaries (name, last_value);

-- Consumer positions, written in the same transaction as the rows they produced.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Messages that failed validation: kept with their bytes and location, never blocking.
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    key         bytea,
    raw         bytea       NOT NULL,
    reason      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);
