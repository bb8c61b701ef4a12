-- The compact history (telemetry.history): one row per lamp and UTC day, its readings packed (telemetry.daypack).

CREATE TABLE IF NOT EXISTS lamp_history (
    lamp_no          integer NOT NULL,
    day              date NOT NULL,
    readings         integer NOT NULL,
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    energy_first_wh  bigint,
    energy_last_wh   bigint,
    codec            smallint NOT NULL,
    data             bytea NOT NULL,
    PRIMARY KEY (lamp_no, day)
);
-- Already compressed: kept in the row as they are (MAIN, and a row may fill a page before TOAST is tried), which
-- wastes less than TOAST's 2 kB chunks: about 9.6 instead of 10.2 bytes a lamp reading.
ALTER TABLE lamp_history ALTER COLUMN data SET STORAGE MAIN;
ALTER TABLE lamp_history SET (toast_tuple_target = 8160);
CREATE INDEX IF NOT EXISTS lamp_history_day_idx ON lamp_history USING brin (day);
