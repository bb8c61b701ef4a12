-- The lighting schedules (the city's default profile first), the rate's samples, nightly reports and the
-- operators' alerts when a rate falls below its target.
CREATE TABLE schedules (
    scope       text NOT NULL CHECK (scope IN ('city', 'district', 'road', 'cabinet', 'lamp')),
    key         text NOT NULL,
    doc         jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key),
    CHECK (scope <> 'city' OR key = 'all')
);
INSERT INTO schedules (scope, key, doc) VALUES ('city', 'all',
    '{"profile": {"mode": "astro", "on_offset_min": 10, "off_offset_min": -10, "level": 100,
                  "steps": [], "exceptions": [], "timezone": "Asia/Shanghai"}, "windows": [], "override": null}');

CREATE TABLE lighting_rate_samples (
    ts           timestamptz NOT NULL,
    grouping     text NOT NULL CHECK (grouping IN ('city', 'district', 'road_class', 'road', 'cabinet')),
    key          text NOT NULL,
    due          integer NOT NULL,
    lit          integer NOT NULL,
    dark         integer NOT NULL,
    unknown      integer NOT NULL,
    day_burning  integer NOT NULL,
    rate         numeric(5, 2),
    target       numeric(5, 2) NOT NULL,
    integrity    numeric(5, 2),
    PRIMARY KEY (grouping, key, ts)
);
CREATE INDEX lighting_rate_samples_ts_idx ON lighting_rate_samples (ts);

CREATE TABLE nightly_reports (
    night        date PRIMARY KEY,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    body         jsonb NOT NULL
);

CREATE TABLE operator_alerts (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    grouping    text NOT NULL,
    key         text NOT NULL,
    raised_at   timestamptz NOT NULL,
    cleared_at  timestamptz,
    rate        numeric(5, 2),
    target      numeric(5, 2) NOT NULL,
    message     text NOT NULL
);
CREATE UNIQUE INDEX operator_alerts_open_idx ON operator_alerts (kind, grouping, key) WHERE cleared_at IS NULL;
