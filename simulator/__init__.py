"""Simulated field devices speaking the protocol: the vectorised fleet, its fault injection, the publisher."""
