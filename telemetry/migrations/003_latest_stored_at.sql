-- Wall-clock time of the last change, so a process without a gateway can follow the fleet by polling.
ALTER TABLE lamp_latest ADD COLUMN stored_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX lamp_latest_stored_idx ON lamp_latest (stored_at);
