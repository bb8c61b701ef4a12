-- The map's geometry (seeds.generator): a district's border, a road's lit stretch, the rivers. Each is a JSON array
-- of [lon, lat] pairs; an inventory loaded before this migration has none, and the map falls back on outlines drawn
-- around the lamps.
ALTER TABLE districts ADD COLUMN IF NOT EXISTS boundary jsonb;
ALTER TABLE roads ADD COLUMN IF NOT EXISTS path jsonb;
CREATE TABLE IF NOT EXISTS waterways (
    code     text PRIMARY KEY,
    name_zh  text NOT NULL,
    name_en  text NOT NULL,
    path     jsonb NOT NULL
);
