"""Device ids as the gateway knows them: each lamp's and cabinet's number and district, packed, and which cabinet
each lamp hangs on; with the inventory's district codes and a cheap fingerprint that changes when it does."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import psycopg

from inventory.errors import InventoryError
from kernel.binary import binary_rows

__all__ = ["PackedDevices", "Registry", "district_codes", "inventory_version", "load_registry"]


class PackedDevices(Mapping[str, tuple[int, str]]):
    """Device id → (number, district), each kept as one int (number × 4096 + the district's position): at a
    million lamps about 56 MB less than a tuple per device. The tuple is made when asked for."""

    __slots__ = ("_codes", "_districts")

    def __init__(self, codes: dict[str, int], districts: list[str]) -> None:
        self._codes = codes
        self._districts = districts

    @staticmethod
    def code(number: int, district: int) -> int:
        return number << 12 | district

    def get(self, key: str, default: Any = None) -> Any:  # the codec's lookup, once per message
        code = self._codes.get(key)
        return default if code is None else (code >> 12, self._districts[code & 0xFFF])

    def __getitem__(self, key: str) -> tuple[int, str]:
        code = self._codes[key]
        return code >> 12, self._districts[code & 0xFFF]

    def __iter__(self) -> Iterator[str]:
        return iter(self._codes)

    def __len__(self) -> int:
        return len(self._codes)


class Registry:
    """The seeded inventory as the codec needs it: device id → (number, district), and which cabinet each lamp
    hangs on (`cabinet_of[lamp number]`, a cabinet's number; −1 for none), so that a concentrator speaks only for
    its own lamps."""

    __slots__ = ("cabinet_of", "cabinets", "lamps")

    def __init__(
        self,
        lamps: Mapping[str, tuple[int, str]],
        cabinets: Mapping[str, tuple[int, str]],
        cabinet_of: Any = (),  # a sequence of ints: a numpy array at a city's size
    ) -> None:
        self.lamps = lamps
        self.cabinets = cabinets
        self.cabinet_of = cabinet_of

    def cabinet_of_lamp(self, lamp_no: int) -> int:
        """The number of the cabinet a lamp hangs on (−1: none known)."""
        return int(self.cabinet_of[lamp_no]) if 0 <= lamp_no < len(self.cabinet_of) else -1


def district_codes(conn: psycopg.Connection) -> list[str]:
    """The inventory's district codes, in order."""
    return [r[0] for r in conn.execute("SELECT code FROM districts ORDER BY code").fetchall()]


def inventory_version(conn: psycopg.Connection) -> tuple[object, ...]:
    """A cheap fingerprint of the inventory: it changes when lamps or cabinets are added, removed or reseeded."""
    row = conn.execute(
        "SELECT (SELECT created_at FROM seed_info), (SELECT count(*) FROM lamps), (SELECT max(no) FROM lamps), "
        "(SELECT count(*) FROM cabinets), (SELECT max(no) FROM cabinets)"
    ).fetchone()
    return tuple(row) if row else ()


def load_registry(conn: psycopg.Connection) -> Registry:
    """Device id → (number, district) for every lamp and cabinet in the inventory.

    Read as COPY text rather than rows, and kept packed (`PackedDevices`): at a million lamps, rows and a tuple
    and a district string per lamp cost the process about 150 MB more for good."""
    districts = [r[0] for r in conn.execute("SELECT code FROM districts ORDER BY code")]
    if len(districts) > 4096:
        raise InventoryError(f"the inventory has {len(districts)} districts; the registry holds at most 4,096")
    position = {d: i for i, d in enumerate(districts)}

    def table(name: str) -> PackedDevices:
        with conn.cursor() as cur, cur.copy(f"COPY (SELECT id, no, district FROM {name}) TO STDOUT") as cp:
            text = b"".join(bytes(chunk) for chunk in cp).decode()
        codes: dict[str, int] = {}
        for line in text.splitlines():
            device, no, district = line.split("\t")
            codes[device] = PackedDevices.code(int(no), position[district])
        return PackedDevices(codes, districts)

    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY (SELECT l.no, c.no FROM lamps l JOIN cabinets c ON c.id = l.cabinet_id) TO STDOUT (FORMAT BINARY)"
        ) as cp,
    ):
        raw = b"".join(bytes(chunk) for chunk in cp)
    pairs = binary_rows(raw, [("lamp", ">i4"), ("cabinet", ">i4")])
    cabinet_of = np.full(int(pairs["lamp"].max(initial=-1)) + 1, -1, dtype=np.int32)
    cabinet_of[pairs["lamp"]] = pairs["cabinet"]
    return Registry(table("lamps"), table("cabinets"), cabinet_of)
