"""The kernel every room stands on, importing nothing of the project's own: errors and their kinds, the one
backoff, the clock (real or compressed), a process's database (one pool, psycopg's errors read once into our
kinds), leases on advisory locks, secret files and pid files, and times as the field protocol writes them.

Cheap to import: each module is imported by name (`from kernel.clock import Clock`), nothing here."""
