"""The city inventory: a deterministic generator (Xining by default, any size) and its COPY loader."""

from seeds.generator import Inventory, generate
from seeds.loader import load

__all__ = ["Inventory", "generate", "load"]
