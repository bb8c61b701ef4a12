-- The readings' time series, range-partitioned by day (telemetry_partitions keeps the days).
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
) PARTITION BY RANGE (ts);
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
) PARTITION BY RANGE (ts);
-- Readings outside the prepared days (a device with a wrong clock inside the accepted window) land here rather
-- than failing the whole batch.
CREATE TABLE lamp_readings_default PARTITION OF lamp_readings DEFAULT;
CREATE TABLE cabinet_readings_default PARTITION OF cabinet_readings DEFAULT;

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
    VALUES (false, make_interval(days => current_setting('lamplighter.retention_days')::integer));
