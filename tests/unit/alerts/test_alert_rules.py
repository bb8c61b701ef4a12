"""Fault rules and the tracker, pure: every docs/domain.md rule of detection, debounce, correlation and clearing."""

from __future__ import annotations

import datetime as dt

import numpy as np

from alerts.engine import AlertEngine
from alerts.faults import CABINET_FAULTS, LAMP_FAULTS, cabinet_bit, lamp_bit, names_of
from alerts.rules import CabinetHistory, LampHistory, RuleParams, cabinet_masks, lamp_masks
from alerts.tracker import Tracker
from lighting.engine import LightingEngine
from lighting.expected import Expected
from lighting.rate import conditions
from telemetry.fleet import CabinetState, FleetState, fault_mask
from telemetry.models import Batch, CabinetRow, LampRows
from tests.support.rates import CST, NIGHT, fleet, ms, report

P = RuleParams()
T0 = ms(NIGHT)
MIN = 60_000


def masks_at(ix, state, hist, at_ms):  # type: ignore[no-untyped-def]
    return lamp_masks(ix, state, Expected(ix, {}).at(at_ms), hist, at_ms, P)


def test_device_faults_and_night_out() -> None:
    ix = fleet([("arterial", 4)])
    state, hist = FleetState(ix), LampHistory(ix.n, T0 - 3_600_000)
    report(state, 0, NIGHT, faults=("leakage_current",))
    report(state, 1, NIGHT, on=False, dim=0, power=0.0)  # due, fresh, off, no device fault: night_out
    report(state, 2, NIGHT, faults=("something_new",))
    report(state, 3, NIGHT)
    m = masks_at(ix, state, hist, T0 + 1000)
    assert names_of(int(m[0]), LAMP_FAULTS) == ["leakage_current"]
    assert names_of(int(m[1]), LAMP_FAULTS) == ["night_out"]
    assert names_of(int(m[2]), LAMP_FAULTS) == ["unknown_fault"]
    assert m[3] == 0


def test_comm_loss_after_three_intervals_or_a_last_will() -> None:
    ix = fleet([("arterial", 3)], interval_s=300)
    state, hist = FleetState(ix), LampHistory(ix.n, T0 - 3_600_000)
    for i in range(3):
        report(state, i, NIGHT)
    hist.offline[2] = True
    at = T0 + 15 * MIN + 1000  # three 5-minute intervals of silence
    m = masks_at(ix, state, hist, at)
    assert [bool(x & lamp_bit("comm_loss")) for x in m] == [True, True, True]
    m = masks_at(ix, state, hist, T0 + 14 * MIN)
    assert [bool(x & lamp_bit("comm_loss")) for x in m] == [False, False, True]


def test_day_burning_only_after_15_minutes() -> None:
    ix = fleet([("arterial", 1)])
    noon = ms(dt.datetime(2026, 12, 2, 12, 0, tzinfo=CST))
    state, hist = FleetState(ix), LampHistory(ix.n, noon)
    report(state, 0, dt.datetime(2026, 12, 2, 12, 0, tzinfo=CST))
    assert masks_at(ix, state, hist, noon)[0] == 0
    report(state, 0, dt.datetime(2026, 12, 2, 12, 10, tzinfo=CST))  # still on, still reporting
    assert masks_at(ix, state, hist, noon + 14 * MIN)[0] == 0
    assert masks_at(ix, state, hist, noon + 15 * MIN)[0] == lamp_bit("day_burning")
    # Once its reports go stale the backend no longer knows it burns: the clock starts again.
    assert not masks_at(ix, state, hist, noon + 30 * MIN)[0] & lamp_bit("day_burning")


def test_power_anomaly_after_three_reports_and_cycling() -> None:
    ix = fleet([("arterial", 2)], rated=100.0)
    state, hist = FleetState(ix), LampHistory(ix.n, T0)
    slots = np.array([0], dtype=np.int32)
    for k in range(3):
        hist.observe(
            slots,
            np.array([T0 + k * MIN]),
            np.array([True]),
            np.array([100], dtype=np.int16),
            np.array([60.0], dtype=np.float32),  # 40 % under rated × dim: an ageing lamp
            ix.rated_w[slots],
            P,
        )
        report(state, 0, NIGHT + dt.timedelta(minutes=k), power=60.0)
        anomaly = bool(masks_at(ix, state, hist, T0 + k * MIN + 1)[0] & lamp_bit("power_anomaly"))
        assert anomaly == (k == 2)
    # Seven switchings within the hour: cycling.
    one = np.array([1], dtype=np.int32)
    for k in range(8):
        on = np.array([k % 2 == 0])
        hist.observe(
            one,
            np.array([T0 + k * 5 * MIN]),
            on,
            np.array([100], dtype=np.int16),
            np.array([np.nan], dtype=np.float32),
            ix.rated_w[one],
            P,
        )
    assert masks_at(ix, state, hist, T0 + 40 * MIN)[1] & lamp_bit("cycling")
    assert not masks_at(ix, state, hist, T0 + 40 * MIN + 3_600_000)[1] & lamp_bit("cycling")


def test_debounce_two_reports_or_five_minutes_and_p1_at_once() -> None:
    tr = Tracker("lamp", LAMP_FAULTS, 3)
    slots = np.array([0, 1, 2])
    night_out, leak = lamp_bit("night_out"), lamp_bit("leakage_current")
    masks = np.array([night_out, night_out, leak], dtype=np.uint32)
    first = tr.update(slots, masks, np.array([True, True, True]), T0)
    assert [(d.action, d.slot, d.fault, d.priority) for d in first] == [("open", 2, "leakage_current", "P1")]
    # Lamp 0 reports again with the fault: opened. Lamp 1 says nothing for 5 minutes: opened by time.
    second = tr.update(slots[:1], masks[:1], np.array([True]), T0 + MIN)
    assert [(d.action, d.slot, d.fault) for d in second] == [("open", 0, "night_out")]
    assert tr.update(slots[1:2], masks[1:2], np.array([False]), T0 + 4 * MIN) == []
    assert [d.slot for d in tr.update(slots[1:2], masks[1:2], np.array([False]), T0 + 5 * MIN)] == [1]


def test_a_fault_clearing_inside_the_debounce_window_opens_nothing() -> None:
    tr = Tracker("lamp", LAMP_FAULTS, 1)
    s = np.array([0])
    assert tr.update(s, np.array([lamp_bit("night_out")], dtype=np.uint32), np.array([True]), T0) == []
    assert tr.update(s, np.array([0], dtype=np.uint32), np.array([True]), T0 + MIN) == []
    assert tr.update(s, np.array([0], dtype=np.uint32), np.array([False]), T0 + 10 * MIN) == []
    assert tr.tracks == {}


def test_clearing_repeat_verify_and_reopen() -> None:
    tr = Tracker("lamp", LAMP_FAULTS, 1)
    s, yes = np.array([0]), np.array([True])
    bad, good = np.array([lamp_bit("lamp_failure")], dtype=np.uint32), np.array([0], dtype=np.uint32)
    tr.update(s, bad, yes, T0)
    assert [d.action for d in tr.update(s, bad, yes, T0 + MIN)] == ["open"]
    assert tr.update(s, good, yes, T0 + 2 * MIN) == []  # one healthy report is not enough
    assert [d.action for d in tr.update(s, bad, yes, T0 + 3 * MIN)] == ["repeat"]  # came back: same ticket
    tr.update(s, good, yes, T0 + 4 * MIN)
    assert [d.action for d in tr.update(s, good, yes, T0 + 5 * MIN)] == ["clear"]
    # A crew resolves, but the lamp still fails: two reports reopen it.
    tr.update(s, bad, yes, T0 + 6 * MIN)
    tr.update(s, bad, yes, T0 + 7 * MIN)
    tr.resolved(0, "lamp_failure", T0 + 8 * MIN)
    assert tr.update(s, bad, yes, T0 + 9 * MIN) == []
    assert [d.action for d in tr.update(s, bad, yes, T0 + 10 * MIN)] == ["reopen"]
    # Resolved again, and now it reports healthy twice: cleared (the service verifies the ticket).
    tr.resolved(0, "lamp_failure", T0 + 11 * MIN)
    tr.update(s, good, yes, T0 + 12 * MIN)
    assert [d.action for d in tr.update(s, good, yes, T0 + 13 * MIN)] == ["clear"]


def test_a_cut_circuit_is_one_cabinet_outage_and_explains_its_lamps() -> None:
    ix = fleet([("arterial", 12), ("branch", 10)])
    assert ix.lamp_circuit is not None
    ix.lamp_circuit[:6] = 1
    ix.lamp_circuit[6:12] = 2
    state, cab = FleetState(ix), CabinetState(ix)
    for i in range(22):
        dark = i < 6  # circuit 1 of cabinet 0 lost
        report(state, i, NIGHT, on=not dark, dim=0 if dark else 100, power=0.0 if dark else 95.0)
    e = Expected(ix, {}).at(T0 + 1000)
    cond = conditions(ix, state, e)
    mask, explained = cabinet_masks(
        ix, cab, CabinetHistory(2, T0), cond, e.due, T0 + 1000, P, np.zeros(2, dtype=np.bool_)
    )
    assert names_of(int(mask[0]), CABINET_FAULTS) == ["lamps_out"] and mask[1] == 0
    assert explained.tolist() == [True] * 6 + [False] * 16
    # The cabinet itself says circuit_open: a device-reported outage, explaining every lamp behind it.
    row = CabinetRow(T0, 1, 1, False, [True], None, None, None, None, ["circuit_open"], 0, T0)
    cab.apply_rows([row])
    mask, explained = cabinet_masks(
        ix, cab, CabinetHistory(2, T0), cond, e.due, T0 + 1000, P, np.zeros(2, dtype=np.bool_)
    )
    assert mask[0] == cabinet_bit("cabinet_outage") and explained[:12].all() and not explained[12:].any()


def test_door_open_is_an_alarm_only_without_work_at_the_cabinet() -> None:
    ix = fleet([("arterial", 5)])
    cab = CabinetState(ix)
    cab.apply_rows([CabinetRow(T0, 1, 1, True, [True], None, None, None, None, [], 0, T0)])
    state = FleetState(ix)
    for i in range(5):
        report(state, i, NIGHT)
    e = Expected(ix, {}).at(T0)
    cond = conditions(ix, state, e)
    alone, _ = cabinet_masks(ix, cab, CabinetHistory(1, T0), cond, e.due, T0, P, np.array([False]))
    working, _ = cabinet_masks(ix, cab, CabinetHistory(1, T0), cond, e.due, T0, P, np.array([True]))
    assert alone[0] == cabinet_bit("door_open") and working[0] == 0
    assert fault_mask(["door_open"]) != 0  # an unknown lamp code is kept, never dropped


# -- every report judged, whatever batch carries it (issue 28) ---------------------------------------------------


def _engine(lamps: int = 3) -> tuple[LightingEngine, AlertEngine]:
    lighting = LightingEngine(fleet([("arterial", lamps)]), {})
    return lighting, AlertEngine(lighting, T0 - 3_600_000)


def _batch(reports: list[tuple[int, int, tuple[str, ...]]], now_ms: int) -> Batch:
    """Lamp reports as (slot, ts, faults): lit at full power unless `lamp_failure` (then dark, drawing nothing)."""
    rows = LampRows()
    for seq, (slot, ts, faults) in enumerate(reports):
        dark = "lamp_failure" in faults
        rows.ts.append(ts)
        rows.lamp_no.append(slot + 1)
        rows.seq.append(seq)
        rows.on.append(True)
        rows.dim.append(100)
        rows.power_w.append(0.0 if dark else 95.0)
        for column in ("voltage_v", "current_a", "power_factor", "energy_wh", "temp_c", "lux", "rssi_dbm", "mode"):
            getattr(rows, column).append(None)
        rows.faults.append(list(faults))
        rows.received_ms.append(now_ms)
    return Batch(lamps=rows, now_ms=now_ms)


def _feed(lighting: LightingEngine, engine: AlertEngine, batch: Batch) -> list[tuple[str, str, str, int]]:
    assert batch.now_ms is not None
    openings = engine.on_batch(lighting.on_batch(batch), batch.cabinets, batch.statuses, batch.now_ms)
    return [(o.decision.action, o.asset_id, o.decision.fault, o.decision.first_ms) for o in openings]


def test_a_leak_cleared_50_ms_later_in_the_same_batch_opens_its_p1() -> None:
    lighting, engine = _engine()
    got = _feed(lighting, engine, _batch([(0, T0, ("leakage_current",)), (0, T0 + 50, ())], T0 + 200))
    assert got == [("open", "L0000", "leakage_current", T0)]
    assert lighting.state.faults[0] == 0  # the latest state is the clean report
    # Two more clean reports: the fault has cleared (the ticket service closes an untouched ticket as transient).
    got = _feed(lighting, engine, _batch([(0, T0 + 60_000, ())], T0 + 60_100))
    assert got == [("clear", "L0000", "leakage_current", T0)]


def _backlog(failing: set[int]) -> list[tuple[int, int, tuple[str, ...]]]:
    """Six reports five minutes apart, the ones in `failing` with `lamp_failure`."""
    return [(1, T0 + k * 5 * MIN, ("lamp_failure",) if k in failing else ()) for k in range(6)]


def test_a_backlog_uploaded_at_once_is_judged_report_by_report() -> None:
    lighting, engine = _engine()
    got = _feed(lighting, engine, _batch(_backlog({2, 3}), T0 + 40 * MIN))
    # Two consecutive failing reports: one ticket, first seen at the first of them; the four clean reports around
    # them clear it again.
    assert [g for g in got if g[0] == "open"] == [("open", "L0001", "lamp_failure", T0 + 10 * MIN)]
    assert [g[0] for g in got] == ["open", "clear"]


def test_a_backlog_with_one_failing_report_opens_nothing() -> None:
    lighting, engine = _engine()
    assert _feed(lighting, engine, _batch(_backlog({3}), T0 + 40 * MIN)) == []
    # Nor does time: the fault cleared within its debounce window, in report time.
    assert engine.sweep(T0 + 50 * MIN) == []


def test_a_backlog_split_across_batches_is_judged_the_same() -> None:
    lighting, engine = _engine()
    backlog = _backlog({2, 3})
    got = _feed(lighting, engine, _batch(backlog[:3], T0 + 40 * MIN))
    got += _feed(lighting, engine, _batch(backlog[3:], T0 + 40 * MIN + 100))
    assert [(g[0], g[3]) for g in got] == [("open", T0 + 10 * MIN), ("clear", T0 + 10 * MIN)]


def test_reports_older_than_the_judged_ones_still_open_their_faults() -> None:
    lighting, engine = _engine()
    assert _feed(lighting, engine, _batch([(2, T0 + 30 * MIN, ())], T0 + 30 * MIN)) == []
    # Then an older backlog arrives: a leak in it opens its P1; one lamp_failure alone does not; two do.
    late = [(2, T0, ("leakage_current",)), (2, T0 + 5 * MIN, ("lamp_failure",)), (2, T0 + 10 * MIN, ())]
    assert _feed(lighting, engine, _batch(late, T0 + 31 * MIN)) == [("open", "L0002", "leakage_current", T0)]
    late = [(2, T0 + 15 * MIN, ("lamp_failure",)), (2, T0 + 20 * MIN, ("lamp_failure",))]
    assert _feed(lighting, engine, _batch(late, T0 + 32 * MIN)) == [("open", "L0002", "lamp_failure", T0 + 15 * MIN)]
    assert lighting.state.ts_ms[2] == T0 + 30 * MIN  # the present is the newest report


def test_a_cabinet_leak_cleared_within_a_batch_opens_its_p1() -> None:
    lighting, engine = _engine()

    def cab(ts: int, faults: list[str]) -> CabinetRow:
        return CabinetRow(ts, 1, ts, False, [True], None, None, None, None, faults, 3, ts)

    batch = Batch(cabinets=[cab(T0 + 50, []), cab(T0, ["leakage_current"])], now_ms=T0 + 100)
    assert _feed(lighting, engine, batch) == [("open", "C000", "leakage_current", T0)]
