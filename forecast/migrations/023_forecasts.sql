-- The failure forecast (forecast.nightly): its trained models, each night's run, and the lamps it scored at some
-- risk that night (risk 0.05 or more, or at risk): a few thousand rows a night for a city, not one per lamp.
CREATE TABLE IF NOT EXISTS forecast_models (
    id            serial PRIMARY KEY,
    trained_at    timestamptz NOT NULL DEFAULT now(),
    known_until   date NOT NULL,
    horizon_days  integer NOT NULL,
    threshold     real NOT NULL,
    facts         jsonb NOT NULL,
    model         bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS forecast_runs (
    day        date PRIMARY KEY,
    model_id   integer NOT NULL REFERENCES forecast_models,
    lamps      integer NOT NULL,
    at_risk    integer NOT NULL,
    seconds    real NOT NULL,
    ran_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS lamp_forecasts (
    day       date NOT NULL,
    lamp_no   integer NOT NULL,
    risk      real NOT NULL,
    mode      text NOT NULL,
    lo_days   real NOT NULL,
    hi_days   real NOT NULL,
    at_risk   boolean NOT NULL,
    PRIMARY KEY (day, lamp_no)
);
