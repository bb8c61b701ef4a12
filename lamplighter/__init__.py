"""The composition root: settings, the `lamplighter` command, private services and the wiring of processes."""
