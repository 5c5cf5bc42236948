"""The console in a real browser on a short simulated day, through the whole stack.

Mosquitto, the real controller, simulated VCUs behind real firmware bridges (``sim.full``), the
console joined to them as in ``fleet demo --console``, and Debian's Chromium driven through
chromedriver. The day runs in a thread; the tests act on it while it runs (in file order),
and it is stopped when they are done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait as _Wait

from fleet.cli.demo import console_companion
from fleet.console.server import ConsoleServer
from fleet.roads import load_network
from sim.day import prepare_day
from sim.full import FullRun
from sim.scenario import load_scenario
from tests.support.browser import browser_missing, chromium, console_errors

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(300)]

DISPATCHER = "fct_live-dispatcher"
VIEWER = "fct_live-viewer"
SPEEDUP = 150.0
SHOTS = os.environ.get("FLEET_CONSOLE_SCREENSHOTS")  # a directory: docs/img


@dataclasses.dataclass
class LiveDay:
    url: str
    server: ConsoleServer
    stop: Callable[[], None]


def WebDriverWait(driver: Any, timeout_s: float) -> _Wait:
    """Selenium's wait, also over an element the page has just re-drawn."""
    return _Wait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException,))


def click(driver: Any, css: str) -> None:
    """Click what ``css`` finds, again if the page re-drew it in between."""
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)


def api(
    day: LiveDay, path: str, body: object | None = None, token: str = DISPATCHER
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        day.url + path,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def live_day(configs_dir: Path, _mosquitto_address: tuple[str, int]) -> Iterator[LiveDay]:
    host, port = _mosquitto_address
    if not port:
        pytest.skip("no mosquitto")
    if browser_missing() and os.environ.get("FLEET_REQUIRE_BROWSER") != "1":
        pytest.skip(str(browser_missing()))
    sc = load_scenario(configs_dir / "scenarios" / "poa_small.toml")
    net = load_network(sc.site, sc.van)
    day = prepare_day(sc, net=net, max_iterations=300, workers=1)
    ready = threading.Event()
    handle: dict[str, Any] = {}

    def on_ready(server: ConsoleServer) -> None:
        handle["server"] = server
        handle["loop"] = asyncio.get_running_loop()
        handle["task"] = asyncio.current_task()
        ready.set()

    companion = console_companion(
        ("127.0.0.1", 0),
        {"dora": f"dispatcher:{DISPATCHER}", "vic": f"viewer:{VIEWER}"},
        on_ready,
    )
    run = FullRun(day, speedup=SPEEDUP, broker_url=f"mqtt://{host}:{port}", companion=companion)
    failure: list[BaseException] = []

    def play() -> None:
        try:
            run.run()
        except asyncio.CancelledError:
            pass  # stopped by the tests
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=play, name="live-day", daemon=True)
    thread.start()
    assert ready.wait(120), "the stack did not come up"
    if failure:
        raise failure[0]

    def stop() -> None:
        loop, task = handle["loop"], handle["task"]
        loop.call_soon_threadsafe(task.cancel)
        thread.join(60)

    day_ = LiveDay(handle["server"].url, handle["server"], stop)
    # the controller has dispatched the day once vans have orders
    wait_for(
        "the day to be dispatched", lambda: api(day_, "/api/kpis")[1].get("parcels", 0) >= 40, 60
    )
    yield day_
    stop()
    assert not thread.is_alive(), "the day did not stop"
    assert not failure, failure


@pytest.fixture(scope="module")
def page(live_day: LiveDay) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def login(driver: Any, day: LiveDay, token: str) -> None:
    driver.get(day.url + "/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script(
            "return !!(window.fleetConsole && window.fleetConsole.vans.size)"
        )
    )


def open_van(driver: Any, van: str) -> None:
    """Click the van in the vans table and wait for its details."""
    click(driver, '.tabs button[data-tab="vans"]')
    click(driver, f'#van-table tr[data-van="{van}"]')
    WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#details h2").text == f"Van {van}"
    )


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / name))


def positions(driver: Any) -> dict[str, tuple[float, float]]:
    got = driver.execute_script(
        "const o = {}; for (const [k, v] of window.fleetConsole.vans) "
        "if (v.lat !== null) o[k] = [v.lat, v.lon, v.mode]; return o;"
    )
    return {k: (v[0], v[1]) for k, v in got.items()}


def test_the_page_loads_with_no_console_errors_and_the_vans_move(
    page: Any, live_day: LiveDay
) -> None:
    login(page, live_day, DISPATCHER)
    assert page.find_element(By.ID, "user").text == "dora (dispatcher)"
    first = positions(page)
    assert len(first) == 5
    moved = wait_for(
        "a van to move on the map",
        lambda: [v for v, p in positions(page).items() if v in first and p != first[v]],
        45,
    )
    assert moved
    kpis = page.find_element(By.ID, "kpis").text
    assert "DELIVERED" in kpis.upper() and "ENERGY" in kpis.upper()
    assert console_errors(page) == []
    shot(page, "console-overview.png")


def test_clicking_a_van_shows_its_details_and_route(page: Any, live_day: LiveDay) -> None:
    van = wait_for(
        "a van with an order",
        lambda: next(
            (v["van_id"] for v in api(live_day, "/api/vans")[1]["vans"] if v["order_id"]), None
        ),
    )
    open_van(page, van)
    details = page.find_element(By.ID, "details").text
    for label in ("charge", "load", "next stop", "Route"):
        assert label in details
    assert page.find_elements(By.CSS_SELECTOR, "#details .stops li")
    shot(page, "console-van.png")


def test_an_estop_from_the_page_reaches_the_van_and_it_shows_stopped(
    page: Any, live_day: LiveDay
) -> None:
    def driving() -> str | None:
        for v in api(live_day, "/api/vans")[1]["vans"]:
            if v["mode"] == "driving":
                return str(v["van_id"])
        return None

    van = wait_for("a driving van", driving, 60)
    open_van(page, van)
    click(page, "#details .estop-van")
    assert "Emergency-stop" in page.find_element(By.ID, "confirm-text").text
    page.find_element(By.ID, "confirm-ok").click()
    # the van's own state says it is stopped, and the page shows it
    WebDriverWait(page, 30).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "#details .van-mode").get_attribute("data-estop")
            == "true"
        )
    )
    assert "E-STOPPED" in page.find_element(By.CSS_SELECTOR, "#details .van-mode").text
    # the latch is reported at once; the van then brakes at its full deceleration to a standstill
    stopped = wait_for(
        "the e-stopped van at a standstill",
        lambda: next(
            (
                b
                for s, b in [api(live_day, f"/api/vans/{van}")]
                if s == 200 and b["emergency_stop"] is True and b["speed_mps"] == 0
            ),
            None,
        ),
    )
    assert stopped["emergency_stop"] is True
    alert = wait_for(
        "the e-stop alert",
        lambda: next(
            (
                a
                for a in api(live_day, "/api/alerts")[1]["alerts"]
                if a["kind"] == "estop" and a["van_id"] == van
            ),
            None,
        ),
    )
    shot(page, "console-estop.png")
    # acknowledged, and recorded in the controller's log (every console, a restarted one too)
    status, acked = api(live_day, f"/api/alerts/{alert['id']}/ack", {})
    assert status == 200 and acked["acknowledged_by"] == "dora" and acked["recorded"] is True
    wait_for(
        "the acknowledgement in the controller's log",
        lambda: any(
            e["kind"] == "alert_acknowledged" and e["van_id"] == van
            for e in api(live_day, "/api/events?limit=2000")[1]["events"]
        ),
    )


def test_an_order_posted_to_the_api_appears_on_the_map_and_is_planned(
    page: Any, live_day: LiveDay
) -> None:
    order = {
        "parcel_id": "URGENT-1",
        "lon": -51.2180,
        "lat": -30.0330,
        "weight_kg": 2.5,
        "volume_m3": 0.02,
    }
    status, body = api(live_day, "/api/orders", {"parcels": [order]})
    assert status == 201, body
    assert body["created"] == ["URGENT-1"]
    again = api(live_day, "/api/orders", {"parcels": [order]})
    assert again[0] == 200 and again[1]["already_known"] == ["URGENT-1"]  # idempotent
    WebDriverWait(page, 20).until(
        lambda d: d.execute_script("return window.fleetConsole.parcels.has('URGENT-1')")
    )

    def planned_on_a_van() -> Any:
        body = api(live_day, "/api/parcels/URGENT-1")[1]
        return (
            body
            if body.get("van_id") and any("planned on" in h["text"] for h in body["history"])
            else None
        )

    try:
        planned = wait_for("URGENT-1 to be planned onto a van", planned_on_a_van, 60)
    except AssertionError:
        events = api(live_day, "/api/events?limit=2000")[1]["events"][-15:]
        raise AssertionError(f"{api(live_day, '/api/parcels/URGENT-1')[1]}\n{events}") from None
    assert planned["status"] in ("planned", "loaded", "delivered")
    if SHOTS:  # the alerts of the day so far, over the map with its parcels
        page.find_element(By.CSS_SELECTOR, '.tabs button[data-tab="alerts"]').click()
        page.execute_script("window.fleetConsole.map.setZoom(13)")
        time.sleep(1.0)
        shot(page, "console-alerts.png")
    assert any("ordered by dora" in h["text"] for h in planned["history"])


def test_a_viewers_action_is_refused_by_the_server(page: Any, live_day: LiveDay) -> None:
    page.find_element(By.ID, "logout").click()
    WebDriverWait(page, 10).until(lambda d: d.current_url.endswith("/login"))
    login(page, live_day, VIEWER)
    van = sorted(positions(page))[0]
    open_van(page, van)
    WebDriverWait(page, 10).until(
        lambda d: (
            d.find_element(By.XPATH, "//div[@id='details']//button[text()='Pause']").click() or True
        )
    )
    toast = WebDriverWait(page, 10).until(lambda d: d.find_element(By.ID, "toast").text)
    assert "refused (403)" in toast and "vic is a viewer" in toast
    assert api(live_day, f"/api/vans/{van}/pause", {}, token=VIEWER)[0] == 403
    # the browser logs the refused request itself, and nothing else went wrong
    errors = console_errors(page)
    assert [e for e in errors if f"/api/vans/{van}/pause" not in e] == []
    assert any("403" in e for e in errors)
