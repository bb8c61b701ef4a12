-- Clock time (ms) up to which a gateway has committed what it received: the leader samples a minute once every
-- gateway's ingest has passed it.
ALTER TABLE ingest_heartbeat ADD COLUMN ingested_through_ms bigint;
