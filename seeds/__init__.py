"""The city generator: a deterministic inventory (Xining by default, any size), loaded by `inventory.loader`."""
