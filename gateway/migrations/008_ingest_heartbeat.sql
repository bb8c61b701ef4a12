-- One row per gateway (its MQTT client id), rewritten every few seconds: how the API's health, on any machine,
-- knows whether ingest is running and keeping up.
CREATE TABLE ingest_heartbeat (
    gateway               text PRIMARY KEY,
    host                  text NOT NULL,
    pid                   integer NOT NULL,
    started_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    stopped_at            timestamptz,
    oldest_uncommitted_s  real NOT NULL,
    failing_batches       integer NOT NULL,
    received              bigint NOT NULL,
    written               bigint NOT NULL,
    quarantined           bigint NOT NULL
);
