-- Each lamp's day in a few numbers (telemetry.daily): the derived counters of devices that report none, and the
-- failure forecaster's features. One row per lamp and UTC day with readings; `lamp_days_done` lists the days
-- summarised, so the nightly run knows what is left.
CREATE TABLE IF NOT EXISTS lamp_days (
    lamp_no            integer NOT NULL,
    day                date NOT NULL,
    readings           integer NOT NULL,
    on_readings        integer NOT NULL,
    burn_s             integer NOT NULL,
    starts             integer NOT NULL,
    last_on            boolean NOT NULL,
    power_norm_med     real,
    power_norm_spread  real,
    pf_med             real,
    temp_med           real,
    driver_temp_med    real,
    leakage_med        real,
    leakage_max        real,
    burn_h             integer,
    starts_reported    integer,
    faults             text[] NOT NULL,
    PRIMARY KEY (lamp_no, day)
);
CREATE INDEX IF NOT EXISTS lamp_days_day_idx ON lamp_days USING brin (day);
CREATE TABLE IF NOT EXISTS lamp_days_done (
    day        date PRIMARY KEY,
    lamp_days  integer NOT NULL,
    readings   bigint NOT NULL,
    done_at    timestamptz NOT NULL DEFAULT now()
);
