"""The city's inventory: districts, roads, cabinets and lamps, their tables, and the forms the other rooms read it in
(the registry of device ids, the fleet index in arrays), loaded from a generated city (`seeds`) or kept as it is."""
