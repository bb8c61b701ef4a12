-- A campaign's rows are counted by state through the primary key (command_id first) just as fast, and without an
-- index on `state` the engine's state updates are HOT and a city-wide campaign's 110,000 rows are stored in less time.
DROP INDEX IF EXISTS command_lamps_state_idx;
