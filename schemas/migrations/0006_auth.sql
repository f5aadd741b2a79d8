-- Tokens and workspaces (issue 11). A token authenticates a principal: one workspace and
-- one scope (read < write < admin). Only a salted hash of its secret is kept: the secret
-- is shown once, by `runstream token create`. The id (the token's `rs_<id>_` prefix) is
-- not secret: it finds the row without scanning and names the principal in the audit.
CREATE TABLE tokens (
    token_id    text        PRIMARY KEY,
    workspace   text        NOT NULL,
    scope       text        NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    name        text,
    kdf         text        NOT NULL,
    salt        bytea       NOT NULL,
    hash        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX tokens_workspace ON tokens (workspace, created_at);

-- Experiments and runs belong to a workspace; what existed before goes to "default".
-- Experiment names are unique per workspace.
ALTER TABLE experiments ADD COLUMN workspace text NOT NULL DEFAULT 'default';
ALTER TABLE experiments DROP CONSTRAINT experiments_pkey;
ALTER TABLE experiments ADD CONSTRAINT experiments_pkey PRIMARY KEY (workspace, name);

ALTER TABLE runs ADD COLUMN workspace text NOT NULL DEFAULT 'default';
DROP INDEX runs_experiment_started;
CREATE INDEX runs_experiment_started ON runs (workspace, experiment, started_at DESC);
