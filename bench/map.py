"""`lamplighter bench map`: the control room's map at a city of any size, in headless Chromium.

Private PostgreSQL and broker with a generated city of `--lamps`; `lamplighter api` as its own process, the way a
city runs it; Chromium (Debian's, through Playwright) signs in as a viewer, the way an operator does. Prints how
long the first full map takes from navigation (each of `--pages` fresh pages, and their median), the layout's and
the state's sizes, a redraw after a zoom and after a pan at city scale and at street scale (medians of 14
draws), and the page's JavaScript heap. No lamp has reported in a fresh city, so every lamp is `unknown`, an alarm
colour: all are drawn in the alarm pass, which does not skip the grid cells out of view, the worst case for a
redraw. Needs the test environment (Playwright: `make .venv-dev`, then `.venv-dev/bin/lamplighter bench map`).
Prints a table and, as its last line, one JSON object. Asserts nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from typing import Any

from api.auth import add_user
from inventory.queries import counts
from kernel.database import connect
from lamplighter.config import Settings
from lamplighter.runtime import bench_city
from lamplighter.simproc import lamplighter_process

__all__ = ["run_map_bench"]

_API_PORT = 18082
_PASSWORD = "bench-map-password"
_STREET_SCALE = 0.35 * 111_320  # CSS px per degree of latitude: 1 km ≈ 350 px, where street names show


def _redraw(page: Any, script: str, back: str, times: int = 7) -> float:
    """Median milliseconds of the map's draw after `script` (a zoom or a pan), then after `back` (its reverse),
    `times` each: the map draws on the next animation frame."""
    ms = []
    for i in range(2 * times):
        step = script if i % 2 == 0 else back
        page.evaluate(
            f"() => new Promise((done) => {{ {step}; requestAnimationFrame(() => requestAnimationFrame(done)); }})"
        )
        ms.append(float(page.evaluate("window.lamplighter.map.lastDraw.ms")))
    return round(statistics.median(ms), 1)


def run_map_bench(settings: Settings, *, lamps: int, pages: int = 3) -> int:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("bench map needs Playwright, in the test environment: make .venv-dev, then .venv-dev/bin/lamplighter")
        return 2
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    t0 = time.perf_counter()
    with bench_city(settings, lamps) as ep:
        seeded_s = time.perf_counter() - t0
        with connect(ep.database_url, autocommit=True) as conn:
            add_user(conn, "bench-map", "viewer", password=_PASSWORD, lang="en", replace=True)
            roads = counts(conn)["roads"]
        env = {**os.environ, **ep.env(), "LAMPLIGHTER_API_PORT": str(_API_PORT)}
        base = f"http://127.0.0.1:{_API_PORT}"
        print(f"bench map: {lamps:,} lamps, {roads:,} roads (generated and loaded in {seeded_s:.0f} s)", flush=True)
        with (
            lamplighter_process(["api"], env, ready="Application startup complete", timeout_s=600),
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            renders: list[float] = []
            steps: list[tuple[float, float]] = []
            sizes: dict[str, int] = {}
            result: dict[str, Any] = {"lamps": lamps, "roads": roads}
            for i in range(pages):
                page = browser.new_page(viewport={"width": 1600, "height": 1200})
                page.goto(base + "/")
                page.wait_for_url("**/login**")
                page.fill("#name", "bench-map")
                page.fill("#password", _PASSWORD)
                page.click("#login-submit")
                page.wait_for_function("window.lamplighter && window.lamplighter.firstFullDraw", timeout=300_000)
                first = page.evaluate("window.lamplighter.firstFullDraw")
                renders.append(float(first["at_ms"]))
                steps.append((float(first["layout_ms"]), float(first["map_ms"])))
                if i < pages - 1:
                    page.close()
                    continue
                sizes = page.evaluate(
                    r"""() => Object.fromEntries(performance.getEntriesByType('resource')
                         .filter(e => /map\/(layout|state)/.test(e.name))
                         .map(e => [e.name.split('/').pop(), e.decodedBodySize]))"""
                )
                result["fetch_ms"] = page.evaluate(
                    r"""() => Object.fromEntries(performance.getEntriesByType('resource')
                         .filter(e => /map\/(layout|state)|\/me$/.test(e.name))
                         .map(e => [e.name.split('/').pop(),
                                    [e.requestStart, e.responseStart, e.responseEnd].map(Math.round)]))"""
                )
                m = "window.lamplighter.map"
                page.evaluate(f"{m}.reset()")
                page.wait_for_timeout(300)
                zoom_in, zoom_out = f"{m}.scale *= 1.5; {m}.request()", f"{m}.scale /= 1.5; {m}.request()"
                pan, pan_back = f"{m}.cx += 200 / {m}.scale; {m}.request()", f"{m}.cx -= 200 / {m}.scale; {m}.request()"
                result["city_zoom_ms"] = _redraw(page, zoom_in, zoom_out)
                result["city_pan_ms"] = _redraw(page, pan, pan_back)
                lon, lat = page.evaluate(
                    "() => { const d = window.lamplighter.layout.districts[0]; return d.centre || d.outline[0]; }"
                )
                page.evaluate(f"{m}.view({lon}, {lat}, {_STREET_SCALE})")
                result["street_zoom_ms"] = _redraw(page, zoom_in, zoom_out)
                result["street_pan_ms"] = _redraw(page, pan, pan_back)
                result["street_labels"] = page.evaluate(f"{m}.lastDraw.roadLabels")
                heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
                result["js_heap_mb"] = round(heap / 2**20, 1) if heap else None
                page.close()
            browser.close()
    result["first_render_ms"] = [round(r) for r in renders]
    result["first_render_median_ms"] = round(statistics.median(renders))
    result["layout_parsed_ms"] = round(statistics.median(s[0] for s in steps))
    result["map_built_ms"] = round(statistics.median(s[1] for s in steps))
    result["layout_bytes"] = sizes.get("layout")
    result["state_bytes"] = sizes.get("state")
    rows = [
        ("first full map from navigation, median", f"{result['first_render_median_ms']:,} ms"),
        ("  each page", ", ".join(f"{r:,}" for r in result["first_render_ms"]) + " ms"),
        (
            "  layout parsed / map built, median",
            f"{result['layout_parsed_ms']:,} / {result['map_built_ms']:,} ms from navigation",
        ),
        ("layout (JSON) / state (bytes)", f"{result['layout_bytes'] or 0:,} / {result['state_bytes'] or 0:,} B"),
        ("redraw after a zoom / a pan, city scale", f"{result['city_zoom_ms']:.1f} / {result['city_pan_ms']:.1f} ms"),
        (
            "redraw after a zoom / a pan, street scale",
            f"{result['street_zoom_ms']:.1f} / {result['street_pan_ms']:.1f} ms ({result['street_labels']} names)",
        ),
        ("JavaScript heap", f"{result['js_heap_mb']} MB"),
    ]
    for name, value in rows:
        print(f"{name:44} {value}")
    print(json.dumps(result))
    return 0
