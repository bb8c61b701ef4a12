"""Simulated field devices speaking the protocol: the vectorised fleet, its fault injection, the publisher."""

from simulator.fleet import Fleet, FleetSpec
from simulator.runner import Simulator

__all__ = ["Fleet", "FleetSpec", "Simulator"]
