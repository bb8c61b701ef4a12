-- The readings' time series, as TimescaleDB hypertables of a day a chunk, compressed and dropped by its policies.
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE TABLE lamp_readings (
    ts            timestamptz NOT NULL,
    lamp_no       integer NOT NULL,
    seq           integer NOT NULL,
    is_on         boolean NOT NULL,
    dim           smallint NOT NULL,
    power_w       real,
    voltage_v     real,
    current_a     real,
    power_factor  real,
    energy_wh     bigint,
    temp_c        real,
    lux           real,
    rssi_dbm      smallint,
    mode          text,
    faults        text[] NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE TABLE cabinet_readings (
    ts                 timestamptz NOT NULL,
    cabinet_no         integer NOT NULL,
    seq                integer NOT NULL,
    door_open          boolean NOT NULL,
    contactors         boolean[] NOT NULL,
    phase_voltage_v    real[],
    circuit_current_a  real[],
    leakage_ma         real,
    energy_wh          bigint,
    faults             text[] NOT NULL,
    lamp_count         integer NOT NULL,
    received_at        timestamptz NOT NULL
);

-- (device, ts, seq) is the protocol's identity of a reading: the unique index is what makes a broker's
-- redelivery after a crash harmless.
CREATE UNIQUE INDEX lamp_readings_key ON lamp_readings (lamp_no, ts, seq);
CREATE UNIQUE INDEX cabinet_readings_key ON cabinet_readings (cabinet_no, ts, seq);
CREATE TABLE telemetry_settings (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    timescaledb  boolean NOT NULL,
    retention    interval NOT NULL
);
INSERT INTO telemetry_settings (timescaledb, retention)
    VALUES (true, make_interval(days => current_setting('lamplighter.retention_days')::integer));

SELECT create_hypertable('lamp_readings', 'ts', chunk_time_interval => interval '1 day');
SELECT create_hypertable('cabinet_readings', 'ts', chunk_time_interval => interval '1 day');
ALTER TABLE lamp_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'lamp_no');
ALTER TABLE cabinet_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'cabinet_no');
SELECT add_compression_policy('lamp_readings', interval '7 days');
SELECT add_compression_policy('cabinet_readings', interval '7 days');
SELECT add_retention_policy('lamp_readings', make_interval(days => current_setting('lamplighter.retention_days')::integer));
SELECT add_retention_policy('cabinet_readings', make_interval(days => current_setting('lamplighter.retention_days')::integer));
