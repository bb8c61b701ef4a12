"""The inventory's loader: a load is idempotent, refuses another city unless replacing, and a replace clears what
every room kept of the old devices."""

from __future__ import annotations

import psycopg
import pytest

from inventory.loader import InventoryError, Replaced, load, summary
from lamplighter.seeding import load_city
from seeds.generator import generate

pytestmark = pytest.mark.services


def test_load_is_idempotent_and_refuses_a_different_city(owner_url: str) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        assert load(conn, generate(3000, seed=2), progress=False) is True
        assert load(conn, generate(3000, seed=2), progress=False) is False
        with pytest.raises(InventoryError, match="--replace"):
            load(conn, generate(4000, seed=2), progress=False)
        rows = summary(conn)
        assert sum(r.lamps for r in rows) == 3000 and len(rows) == 7
        assert isinstance(load_city(conn, generate(4000, seed=2), replace=True), Replaced)
        assert conn.execute("SELECT count(*) FROM lamps").fetchone() == (4000,)


def test_replace_always_replaces_and_clears_what_referred_to_the_old_city(owner_url: str) -> None:
    import datetime as dt

    from alerts.tickets import open_ticket
    from lighting.engine import put_schedule
    from lighting.schedules import decode_doc

    now = dt.datetime(2026, 11, 30, 20, tzinfo=dt.UTC)
    with psycopg.connect(owner_url, autocommit=True) as conn:
        assert load(conn, generate(3000, seed=2), progress=False) is True
        lamp, district = conn.execute("SELECT id, district FROM lamps ORDER BY no LIMIT 1").fetchone()  # type: ignore[misc]
        open_ticket(
            conn, priority="P3", fault="lamp_failure", asset_type="lamp", asset_id=lamp, district=district,
            source="backend", first_seen=now, now=now,
        )  # fmt: skip
        put_schedule(conn, "lamp", lamp, decode_doc('{"profile": {"mode": "always"}}'))
        conn.execute(
            "INSERT INTO commands (id, op, params, target, actor, status, pace, total, created_at, expires_at) "
            "VALUES ('cmd00000001', 'switch', '{}', '{}', 'test', 'done', 1, 1, %s, %s)",
            (now, now),
        )

        # The same size and seed: replaced all the same, and what referred to the old lamps is gone.
        out = load_city(conn, generate(3000, seed=2), replace=True)
        assert isinstance(out, Replaced)
        assert (out.lamps, out.seed) == (3000, 2)
        assert out.counts["tickets"] == 1 and out.counts["commands"] == 1 and out.counts["schedules"] >= 1
        text = out.describe()
        assert "1 tickets" in text and "1 commands" in text and "reading" in text
        for table in ("tickets", "ticket_events", "commands", "lamp_history", "cabinet_history"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        assert conn.execute("SELECT scope FROM schedules").fetchall() == [("city",)]  # the city's own document stays
        assert conn.execute("SELECT count(*) FROM lamps").fetchone() == (3000,)
        # Without --replace the same city is still left alone.
        assert load(conn, generate(3000, seed=2), progress=False) is False
