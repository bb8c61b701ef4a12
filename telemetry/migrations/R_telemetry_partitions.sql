-- Partition upkeep as the schema's owner: the application's role calls it, and can do nothing else of DDL. It keeps
-- the days from the retention horizon to three days ahead (so a burst of readings after midnight never waits on DDL),
-- drops older days with the compact history's, and does nothing under TimescaleDB, whose policies do the same. Readings
-- of a day that landed in the default partition (a device clock ahead, a compressed clock past midnight) move into the
-- day's new partition, since PostgreSQL refuses a partition whose range the default one holds rows of.
CREATE OR REPLACE FUNCTION telemetry_partitions(today date, drop_old boolean)
RETURNS TABLE (created integer, dropped integer, moved bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    hypertables boolean;
    keep integer;
    first_day date;
    d date;
    t text;
    part text;
    lo text;
    hi text;
    stray boolean;
    n bigint;
    old record;
BEGIN
    created := 0; dropped := 0; moved := 0;
    SELECT s.timescaledb, extract(day FROM s.retention)::int INTO hypertables, keep FROM telemetry_settings s;
    IF NOT FOUND OR hypertables THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(7426002);
    first_day := today - keep;
    FOREACH t IN ARRAY ARRAY['lamp_readings', 'cabinet_readings'] LOOP
        d := first_day;
        WHILE d <= today + 3 LOOP
            part := t || '_' || to_char(d, 'YYYYMMDD');
            IF NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                           WHERE i.inhparent = t::regclass AND c.relname = part) THEN
                lo := to_char(d, 'YYYY-MM-DD') || ' 00:00+00';
                hi := to_char(d + 1, 'YYYY-MM-DD') || ' 00:00+00';
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE ts >= %L AND ts < %L)', t || '_default', lo, hi)
                    INTO stray;
                IF stray THEN
                    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, t);
                    EXECUTE format('WITH m AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *) '
                                   'INSERT INTO %I SELECT * FROM m', t || '_default', lo, hi, part);
                    GET DIAGNOSTICS n = ROW_COUNT;
                    moved := moved + n;
                    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', t, part, lo, hi);
                ELSE
                    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', part, t, lo, hi);
                END IF;
                created := created + 1;
            END IF;
            d := d + 1;
        END LOOP;
        IF drop_old THEN
            FOR old IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                       WHERE i.inhparent = t::regclass AND c.relname ~ ('^' || t || '_[0-9]{8}$') LOOP
                IF to_date(right(old.relname, 8), 'YYYYMMDD') < first_day THEN
                    EXECUTE format('DROP TABLE %I', old.relname);
                    dropped := dropped + 1;
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    IF drop_old THEN
        DELETE FROM lamp_history WHERE lamp_history.day < first_day;
        DELETE FROM cabinet_history WHERE cabinet_history.day < first_day;
    END IF;
    RETURN NEXT;
END
$fn$;
REVOKE ALL ON FUNCTION telemetry_partitions(date, boolean) FROM PUBLIC;
