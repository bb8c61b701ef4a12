"""The city inventory: a deterministic generator (Xining by default, any size) and its COPY loader."""
