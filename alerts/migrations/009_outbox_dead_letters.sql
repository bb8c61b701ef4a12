-- A delivery that kept failing past its limits is set aside (dead-lettered) instead of retried forever.
ALTER TABLE outbox ADD COLUMN dead_at timestamptz;
DROP INDEX IF EXISTS outbox_pending_idx;
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL;
