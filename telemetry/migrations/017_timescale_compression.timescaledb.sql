-- TimescaleDB's compression is the compact history there: one compressed row per device (segment) and day (the
-- chunk), its readings in time order, compressed once the day is `compact_after_days` old (it was a week).
DO $$
DECLARE
    days integer := current_setting('lamplighter.compact_after_days')::integer;
    t text;
    segment text;
BEGIN
    FOREACH t IN ARRAY ARRAY['lamp_readings', 'cabinet_readings'] LOOP
        segment := CASE t WHEN 'lamp_readings' THEN 'lamp_no' ELSE 'cabinet_no' END;
        BEGIN
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                           'timescaledb.compress_orderby = %L)', t, segment, 'ts ASC, seq ASC');
        EXCEPTION WHEN others THEN  -- chunks compressed with the old order keep it, new ones too
            RAISE WARNING '%: compression order left as it was: %', t, SQLERRM;
        END;
        PERFORM remove_compression_policy(t, if_exists => true);
        IF days > 0 THEN
            PERFORM add_compression_policy(t, make_interval(days => days));
        END IF;
    END LOOP;
END
$$;
