-- Experiments are named per workspace (0006), so their MLflow metadata (0009: display name,
-- lifecycle, tags) is kept per workspace too: two workspaces' experiments of one name never
-- share a rename, a deletion or a tag. Rows written before belong to workspace 'default'.
-- Plain PostgreSQL and TimescaleDB alike (an ordinary table).
ALTER TABLE experiment_meta ADD COLUMN workspace text NOT NULL DEFAULT 'default';
ALTER TABLE experiment_meta DROP CONSTRAINT experiment_meta_pkey;
ALTER TABLE experiment_meta ADD PRIMARY KEY (workspace, name);
