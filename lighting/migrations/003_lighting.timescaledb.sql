-- The rate's samples as a hypertable. (Until migration 016, also an hourly continuous aggregate that nothing read.)
ALTER TABLE lighting_rate_samples DROP CONSTRAINT lighting_rate_samples_pkey;
SELECT create_hypertable('lighting_rate_samples', 'ts', chunk_time_interval => interval '7 days');
CREATE UNIQUE INDEX lighting_rate_samples_key ON lighting_rate_samples (grouping, key, ts);
