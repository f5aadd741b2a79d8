-- Dead letters name what they belong to and which part of the event failed, so that only
-- the offending point/row of an event is kept aside (its neighbours are stored), a run can
-- show how many of its events or points were dead-lettered, and an operator can re-drive
-- them (`runstream dead-letters retry`).
--   run_id, seq: the event's, when it decoded (NULL for bytes that are not an event).
--   item: which point (metric.points/metric.list, counted over the event's series in
--         order) or row (metric.rows/metric.table) was rejected; -1 the whole event.
--   retried_at: set when a re-drive stored it; such rows no longer count as pending.
ALTER TABLE dead_letters
    ADD COLUMN run_id uuid,
    ADD COLUMN seq bigint,
    ADD COLUMN item integer NOT NULL DEFAULT -1,
    ADD COLUMN retried_at timestamptz;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_topic_partition_offset_key;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_message_item UNIQUE (topic, partition, "offset", item);
CREATE INDEX dead_letters_run_pending ON dead_letters (run_id) WHERE retried_at IS NULL;
