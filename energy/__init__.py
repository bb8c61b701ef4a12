"""Energy: what each lamp and cabinet used, from the devices' meters (integration with resets, gaps and partial
nights said), a night's energy per lamp and cabinet stored once, and tariffs with time-of-use prices.

Cheap to import: each module is imported by name, nothing here."""
