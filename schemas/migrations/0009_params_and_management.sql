-- Parameters, run management (rename, delete/restore) and experiment metadata: the
-- projections of params.logged, run.renamed, run.deleted/restored and the experiment.*
-- events (MLflow compatibility, issue 12; run management, issue 13), plus the allocation
-- of the seqs the query API gives the events it writes. Plain SQL: the same on TimescaleDB.

-- A run's parameters: immutable, the first value logged for a key is kept.
CREATE TABLE params (
    run_id      uuid        NOT NULL,
    key         text        NOT NULL,
    value       text        NOT NULL,
    logged_at   timestamptz NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX params_key_value ON params (key, value);

-- deleted_at: set by run.deleted, cleared by run.restored (hidden from listings meanwhile).
-- server_seq: the highest seq materialized of the events the query API wrote for a run it
-- does not number (seq >= schemas.events.SERVER_SEQ_BASE); last_seq stays the owner's.
ALTER TABLE runs ADD COLUMN deleted_at timestamptz, ADD COLUMN server_seq bigint;

-- What experiment events say about an experiment, keyed by the experiment's key (the name
-- its runs refer to). display_name: the name after a rename (NULL: the key).
CREATE TABLE experiment_meta (
    name            text        PRIMARY KEY,
    display_name    text,
    deleted_at      timestamptz,
    tags            jsonb       NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL,
    last_seq        bigint      NOT NULL
);
CREATE INDEX experiment_meta_display_name ON experiment_meta (display_name) WHERE display_name IS NOT NULL;

-- The next seq the query API gives an event of a run (or experiment stream) it writes for:
-- one row per stream, advanced atomically (UPDATE ... RETURNING), so two API processes never
-- hand out the same seq. A stream the API created starts at 0 (the API is its one writer);
-- any other at SERVER_SEQ_BASE. acked_seq: the highest seq Kafka acknowledged (MLflow's reads
-- of the stream wait until it is materialized). Not a projection: replay keeps it, like
-- consumer_offsets.
CREATE TABLE seq_allocations (
    run_id      uuid    PRIMARY KEY,
    next_seq    bigint  NOT NULL,
    acked_seq   bigint  NOT NULL DEFAULT -1
);
