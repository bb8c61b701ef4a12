-- Several gateways share ingest, each holding some districts: the health says which are held by nobody.
ALTER TABLE ingest_heartbeat ADD COLUMN districts text[] NOT NULL DEFAULT '{}';
