-- A night's energy for every lamp and cabinet (energy.nights): one row a night, its arrays packed.
CREATE TABLE IF NOT EXISTS energy_nights (
    night        date PRIMARY KEY,
    start_at     timestamptz NOT NULL,
    end_at       timestamptz NOT NULL,
    complete     boolean NOT NULL,
    lamps        integer NOT NULL,
    cabinets     integer NOT NULL,
    data         bytea NOT NULL,
    computed_at  timestamptz NOT NULL
);
