-- The lamp report's counters and measurements for failure forecasting (docs/protocol.md): operating hours and
-- switch-on count as the driver keeps them, the driver's temperature, and the earth leakage at the pole. NULL where
-- a device leaves them out. The latest state keeps the two counters, so a lamp's page shows them without a scan.
ALTER TABLE lamp_readings
    ADD COLUMN IF NOT EXISTS burn_h integer,
    ADD COLUMN IF NOT EXISTS starts integer,
    ADD COLUMN IF NOT EXISTS driver_temp_c real,
    ADD COLUMN IF NOT EXISTS leakage_ma real;
ALTER TABLE lamp_latest
    ADD COLUMN IF NOT EXISTS burn_h integer,
    ADD COLUMN IF NOT EXISTS starts integer;
