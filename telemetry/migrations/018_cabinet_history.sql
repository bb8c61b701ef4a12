-- The compact history of cabinets: one row per cabinet and UTC day, its readings packed (telemetry.cabinetday).

CREATE TABLE IF NOT EXISTS cabinet_history (
    cabinet_no       integer NOT NULL,
    day              date NOT NULL,
    readings         integer NOT NULL,
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    energy_first_wh  bigint,
    energy_last_wh   bigint,
    codec            smallint NOT NULL,
    data             bytea NOT NULL,
    PRIMARY KEY (cabinet_no, day)
);
-- Already compressed: kept in the row as they are (MAIN, and a row may fill a page before TOAST is tried), which
-- wastes less than TOAST's 2 kB chunks: about 9.6 instead of 10.2 bytes a lamp reading.
ALTER TABLE cabinet_history ALTER COLUMN data SET STORAGE MAIN;
ALTER TABLE cabinet_history SET (toast_tuple_target = 8160);
CREATE INDEX IF NOT EXISTS cabinet_history_day_idx ON cabinet_history USING brin (day);
