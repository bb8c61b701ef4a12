-- The city's inventory: districts, roads, cabinets, lamps, and which generated city it is.

CREATE TABLE seed_info (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    seed        bigint NOT NULL,
    lamps       integer NOT NULL,
    city        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE districts (
    code     text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9]{1,7}$'),
    name_zh  text NOT NULL,
    name_en  text NOT NULL,
    lat      double precision NOT NULL,
    lon      double precision NOT NULL
);
CREATE TABLE roads (
    id          integer PRIMARY KEY,
    district    text NOT NULL REFERENCES districts,
    name_zh     text NOT NULL,
    name_en     text NOT NULL,
    road_class  text NOT NULL CHECK (road_class IN ('expressway', 'arterial', 'secondary', 'branch'))
);
CREATE TABLE cabinets (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Z0-9][A-Z0-9-]{3,31}$'),
    no            integer NOT NULL UNIQUE,
    district      text NOT NULL REFERENCES districts,
    road_id       integer NOT NULL REFERENCES roads,
    circuits      smallint NOT NULL CHECK (circuits BETWEEN 1 AND 6),
    concentrator  boolean NOT NULL,
    lat           double precision NOT NULL,
    lon           double precision NOT NULL
);
CREATE TABLE lamps (
    id                 text PRIMARY KEY CHECK (id ~ '^[A-Z0-9][A-Z0-9-]{3,31}$'),
    no                 integer NOT NULL UNIQUE,
    district           text NOT NULL REFERENCES districts,
    road_id            integer NOT NULL REFERENCES roads,
    cabinet_id         text NOT NULL REFERENCES cabinets,
    circuit            smallint NOT NULL CHECK (circuit BETWEEN 1 AND 6),
    lat                double precision NOT NULL,
    lon                double precision NOT NULL,
    technology         text NOT NULL CHECK (technology IN ('LED', 'HPS')),
    rated_w            real NOT NULL CHECK (rated_w > 0),
    installed_on       date NOT NULL,
    controller         text NOT NULL CHECK (controller IN ('single', 'concentrator')),
    in_service         boolean NOT NULL DEFAULT true,
    report_interval_s  integer NOT NULL DEFAULT 300 CHECK (report_interval_s BETWEEN 10 AND 3600)
);
CREATE INDEX lamps_district_idx ON lamps (district, no);
CREATE INDEX lamps_cabinet_idx ON lamps (cabinet_id, no);
