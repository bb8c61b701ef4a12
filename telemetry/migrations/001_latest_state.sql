-- Each device's latest report and online status, and the reports set aside as unreadable.
CREATE TABLE lamp_latest (
    lamp_no       integer PRIMARY KEY,
    ts            timestamptz NOT NULL,
    seq           integer NOT NULL,
    is_on         boolean NOT NULL,
    dim           smallint NOT NULL,
    power_w       real,
    voltage_v     real,
    current_a     real,
    energy_wh     bigint,
    temp_c        real,
    faults        text[] NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE TABLE cabinet_latest (
    cabinet_no    integer PRIMARY KEY,
    ts            timestamptz NOT NULL,
    seq           integer NOT NULL,
    door_open     boolean NOT NULL,
    contactors    boolean[] NOT NULL,
    faults        text[] NOT NULL,
    received_at   timestamptz NOT NULL
);
CREATE TABLE device_status (
    device_type  text NOT NULL CHECK (device_type IN ('lamp', 'cabinet')),
    device_id    text NOT NULL,
    online       boolean NOT NULL,
    ts           timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_type, device_id)
);
CREATE TABLE quarantine (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL
);
CREATE INDEX quarantine_received_idx ON quarantine (received_at DESC);
