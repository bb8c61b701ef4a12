-- The hourly continuous aggregate (TimescaleDB only) kept the minimum and mean rate, but the history endpoint sums due,
-- lit, dark and unknown over its buckets, which it cannot answer: it was refreshed and never read. Dropping a
-- continuous aggregate also removes its refresh policy. Nothing to drop on plain PostgreSQL.
DROP MATERIALIZED VIEW IF EXISTS lighting_rate_hourly;
