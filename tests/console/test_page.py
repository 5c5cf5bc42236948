"""The console page in Chromium without a fleet: text from vans and CSVs is never markup,
and a page whose stream stops says so instead of showing old data as live."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from fleet.console.auth import Role, User, Users, token_digest
from fleet.console.server import ConsoleServer, ConsoleSettings
from fleet.model.site import load_site
from fleet.protocol import ErrorLevel, Topics, VanError
from fleet.protocol.clock import WallClock
from fleet.protocol.control_api import Event
from fleet.protocol.messages import make_header
from fleet.protocol.timestamps import format_timestamp
from tests.support.browser import browser, console_errors
from tests.support.protocol_examples import order, state

__all__ = ["browser"]
TOKEN = "fct_page-test"
EVIL = '<img src=x onerror="window.pwned=1">'


@pytest.fixture
def console(configs_dir: Path) -> Iterator[tuple[str, ConsoleServer, asyncio.AbstractEventLoop]]:
    clock = WallClock()
    server = ConsoleServer(
        ConsoleSettings(port=0),
        address=None,
        topics=Topics(),
        clock=clock,
        site=load_site(configs_dir / "sites" / "poa.toml"),
        map_json=json.dumps(
            {
                "title": "t",
                "notes": [],
                "extra": [],
                "attribution": "© OpenStreetMap contributors",
                "attribution_url": "https://www.openstreetmap.org/copyright",
                "scale": 100000,
                "layers": [],
            }
        ).encode(),
        users=Users([User("dora", Role.DISPATCHER, token_digest(TOKEN))]),
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        async with server:
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20)
    yield server.url, server, loop
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


def _feed(server: ConsoleServer, loop: asyncio.AbstractEventLoop, fn: Any) -> None:
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    loop.call_soon_threadsafe(run)
    assert done.wait(5)


def _login(driver: Any, url: str) -> None:
    driver.get(url + "/login")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return !!window.fleetConsole"))


def test_text_from_vans_and_orders_is_shown_as_text(console: Any, browser: Any) -> None:
    url, server, loop = console
    now = WallClock().time()
    err = VanError(error_type="vehicle_fault", level=ErrorLevel.WARNING, description=EVIL)
    o = order(now_s=now)
    evil_event = Event(
        header=make_header("fleet-controller", 1, now),
        event_id=1,
        time=format_timestamp(now),
        kind="parcel_failed",
        van_id=o.van_id,
        parcel_id="P1",
        detail=EVIL,
    )

    def feed() -> None:
        server.view.on_order(o, now)
        server.view.on_state(state(now_s=now, errors=(err,), order_id=o.order_id), now)
        server.view.on_event(evil_event, now)

    _feed(server, loop, feed)
    _login(browser, url)
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#van-table tr"))
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, f'#van-table tr[data-van="{o.van_id}"]').click() or True
        )
    )
    WebDriverWait(browser, 10).until(lambda d: EVIL in d.find_element(By.ID, "details").text)
    browser.find_element(By.CSS_SELECTOR, '.tabs button[data-tab="events"]').click()
    WebDriverWait(browser, 10).until(lambda d: EVIL in d.find_element(By.ID, "event-list").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#details img, #event-list img") == []
    assert browser.execute_script("return window.pwned === undefined")
    assert console_errors(browser) == []


def test_a_page_whose_stream_stops_says_it_is_not_live(console: Any, browser: Any) -> None:
    url, server, loop = console
    _login(browser, url)
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "banner").is_displayed() is False
    )
    # the console goes away: the page must not keep showing its last picture as live
    _feed(server, loop, lambda: setattr(server._server, "should_exit", True))
    for queue in list(server.broadcaster.clients):
        loop.call_soon_threadsafe(queue.put_nowait, None)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "banner").is_displayed())
    assert "Not live" in browser.find_element(By.ID, "banner").text


def test_the_api_docs_render_offline_under_the_content_security_policy(
    console: Any, browser: Any
) -> None:
    url, _, _ = console
    browser.get(url + "/docs")
    WebDriverWait(browser, 20).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10
    )
    text = browser.find_element(By.ID, "swagger-ui").text
    assert "/api/orders" in text and "/api/parcels/{parcel_id}" in text
    assert console_errors(browser) == []
