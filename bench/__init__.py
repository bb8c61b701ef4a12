"""The benchmarks behind `lamplighter bench …`: each runs against private services (or in memory), prints its
figures as it goes and ends with one JSON line. They use the composition root's wiring, never the other way."""
