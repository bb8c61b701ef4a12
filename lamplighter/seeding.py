"""`lamplighter seed`: generate the reference city and load it, with a summary table (also run by the demo)."""

from __future__ import annotations

import sys
import time

from alerts.queries import forget_inventory as forget_tickets
from commands.queries import forget_inventory as forget_commands
from energy.nights import forget_inventory as forget_energy
from fieldnet.provision import forget_inventory as forget_accounts
from forecast.nightly import forget_inventory as forget_forecasts
from inventory.city import Inventory
from inventory.loader import Forget, Replaced, load
from kernel.database import Connection, connect
from lighting.sampler import forget_inventory as forget_lighting
from telemetry.upkeep import forget_inventory as forget_telemetry

__all__ = ["FORGET", "load_city", "seed_command"]

# What each room keeps that refers to the inventory by number or id, emptied when it is replaced.
FORGET: tuple[Forget, ...] = (
    forget_forecasts,
    forget_tickets,
    forget_commands,
    forget_lighting,
    forget_energy,
    forget_telemetry,
    forget_accounts,
)


def load_city(conn: Connection, inv: Inventory, *, replace: bool = False, progress: bool = False) -> Replaced | bool:
    """Load `inv` (`inventory.loader.load`); a replace also empties, in the same transaction, what every room keeps
    of the old inventory's devices."""
    return load(conn, inv, replace=replace, forget=FORGET, progress=progress)


def seed_command(schema_url: str, *, lamps: int, seed: int, replace: bool = False) -> None:
    """Load the inventory as the schema's owner, `schema_url` (a replace empties tables, which the application's
    role may not); the caller has migrated (`Endpoints.migrate`, which also gives the application its rights)."""
    from inventory.loader import summary
    from seeds.generator import generate

    t = time.perf_counter()
    inv = generate(lamps, seed)
    with connect(schema_url, autocommit=True) as conn:
        loaded = load_city(conn, inv, replace=replace, progress=sys.stderr.isatty())
        rows = summary(conn)
    if isinstance(loaded, Replaced):
        print(loaded.describe())
    verb = "loaded" if loaded else "already loaded (nothing to do; --replace loads it afresh)"
    print(f"inventory {verb}: {inv.lamps:,} lamps, seed {seed}, in {time.perf_counter() - t:.1f} s")
    print(f"{'district':<22}{'roads':>7}{'cabinets':>10}{'lamps':>11}{'via cabinet':>13}{'LED':>7}{'rated kW':>10}")
    for r in rows:
        print(
            f"{r.code + ' ' + r.name_zh + ' ' + r.name_en:<22}{r.roads:>7,}{r.cabinets:>10,}{r.lamps:>11,}"
            f"{r.concentrator_share:>12.0%}{r.led_share:>7.0%}{r.rated_kw:>10,.0f}"
        )
    print(
        f"{'total':<22}{sum(r.roads for r in rows):>7,}{sum(r.cabinets for r in rows):>10,}"
        f"{sum(r.lamps for r in rows):>11,}"
    )
