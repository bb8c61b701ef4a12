-- Every reading updates its lamp's row. With an index on stored_at (which each update changes) none of those updates
-- could be HOT: each wrote new entries into both indexes. Without it, and with room left in each page, PostgreSQL
-- updates in place; the followers' `stored_at >` scans read the table instead (110,000 rows every 2 s for the API).
DROP INDEX IF EXISTS lamp_latest_stored_idx;
ALTER TABLE lamp_latest SET (fillfactor = 50);
ALTER TABLE cabinet_latest SET (fillfactor = 50);
