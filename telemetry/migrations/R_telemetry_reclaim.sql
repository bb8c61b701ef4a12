-- The compaction's last step for a day (telemetry.history): its raw partition emptied at once, which gives the disk
-- back, where deleting rows scattered over every page would rewrite all of them. The caller has packed every row
-- into lamp_history (cabinet_history) in the same transaction, holding a lock that keeps writers out; TRUNCATE takes
-- the rest. The application calls the two named for the readings; the one that takes any table is the owner's alone.
CREATE OR REPLACE FUNCTION telemetry_truncate_day(readings text, day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    part text := readings || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(part) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('TRUNCATE %I', part);
    RETURN true;
END
$fn$;
REVOKE ALL ON FUNCTION telemetry_truncate_day(text, date) FROM PUBLIC;

CREATE OR REPLACE FUNCTION telemetry_reclaim(day date) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $fn$ SELECT telemetry_truncate_day('lamp_readings', day) $fn$;
REVOKE ALL ON FUNCTION telemetry_reclaim(date) FROM PUBLIC;

CREATE OR REPLACE FUNCTION telemetry_reclaim_cabinets(day date) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $fn$ SELECT telemetry_truncate_day('cabinet_readings', day) $fn$;
REVOKE ALL ON FUNCTION telemetry_reclaim_cabinets(date) FROM PUBLIC;
