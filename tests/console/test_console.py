"""The web console in a real browser: headless Chromium (the distribution's) driven by selenium.

Screenshots of every page go to ``.kafkastore/console-screenshots/`` for a person to look at.
Without Chromium and chromedriver the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.subscription import RetryPolicy, Subscription
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent
from tests.console.handlers import marker
from tests.support import unique
from tests.support.browser import headless_chromium
from tests.support.serving import serving
from tests.support.topics import own_settings

SCREENSHOTS = Path(__file__).resolve().parents[2] / ".kafkastore" / "console-screenshots"
WAIT = 15.0


@pytest.fixture(scope="module")
def console_settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    group = unique("billing")
    settings = own_settings(
        kafka_bootstrap, database_url, dlq_handlers={group: "tests.console.handlers:remember"}
    )
    yield settings
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics(
        [settings.topic, settings.topic + ".dlq", settings.topic + ".dlq.replayed"]
    )


@pytest.fixture(scope="module")
def api(console_settings: Settings, logs_dir: Path) -> Iterator[str]:
    """An indexer and ``kafkastore serve`` for this module; the API's base URL."""
    with serving(
        console_settings,
        logs_dir / f"console-api-{console_settings.topic}.log",
        indexer_log=logs_dir / f"console-indexer-{console_settings.topic}.log",
    ) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with headless_chromium("--window-size=1280,900", logging={"browser": "ALL"}) as chrome:
        yield chrome


def wait_until(
    condition: Callable[[], Any], timeout: float = WAIT, describe: Callable[[], str] = str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # the page may still be rendering: try again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {describe()}")
        time.sleep(0.05)


def text_of(browser: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return "\n".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, css))


def shown(browser: Any, page: str) -> bool:
    """Whether the console finished rendering ``page`` (``main[data-page]``)."""
    return bool(browser.find_element("id", "main").get_attribute("data-page") == page)


def severe_logs(browser: Any) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def append(api: str, stream: str, *events: tuple[str, Any]) -> dict[str, Any]:
    body = {"events": [{"type": t, "data": d, "metadata": {"by": "test"}} for t, d in events]}
    response = httpx.post(f"{api}/streams/{stream}", json=body, timeout=30)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_every_console_page_loads_without_javascript_errors(browser: Any, api: str) -> None:
    stream = unique("Order")
    append(api, stream, ("OrderPlaced", {"total": 12}))
    pages = {
        "overview": "#/",
        "streams": f"#/streams?prefix={stream}",
        "all": "#/all",
        "groups": "#/groups",
    }
    browser.get(f"{api}/console")
    browser.get_log("browser")  # start clean
    for name, fragment in pages.items():
        browser.get(f"{api}/console{fragment}")
        wait_until(lambda name=name: shown(browser, name))
        assert "Error" not in text_of(browser, "main"), name
        browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    assert severe_logs(browser) == []


def test_a_stream_page_shows_its_events_with_data_metadata_and_state(
    browser: Any, api: str
) -> None:
    stream = unique("Order")
    append(api, stream, ("OrderPlaced", {"total": 12}), ("OrderPaid", {"amount": 12}))
    httpx.put(
        f"{api}/streams/{stream}/metadata",
        json={"expected_metadata_version": 0, "max_count": 50, "custom": {"owner": "console"}},
        timeout=30,
    ).raise_for_status()
    httpx.get(f"{api}/streams/{stream}", params={"min_version": 2}, timeout=30)
    browser.get(f"{api}/console#/stream/{stream}")
    wait_until(lambda: shown(browser, "stream"))
    wait_until(lambda: "OrderPaid" in text_of(browser, "#events"))
    events = text_of(browser, "#events")
    assert "OrderPlaced" in events and '"total": 12' in events and '"by": "test"' in events
    assert "indexed version" in text_of(browser, ".cards")
    assert "readable from" in text_of(browser, ".cards")
    browser.find_element("css selector", "#stream-metadata summary").click()
    metadata = text_of(browser, "#stream-metadata")
    assert (
        "version 1" in metadata
        and '"max_count": 50' in metadata
        and '"owner": "console"' in metadata
    )
    browser.save_screenshot(str(SCREENSHOTS / "stream.png"))
    browser.set_window_size(390, 844)  # a phone
    browser.save_screenshot(str(SCREENSHOTS / "stream-phone.png"))
    browser.set_window_size(1280, 900)
    assert severe_logs(browser) == []


def test_an_event_appended_through_the_api_appears_live_on_all_within_two_seconds(
    browser: Any, api: str
) -> None:
    browser.get(f"{api}/console#/all")
    wait_until(lambda: "off" not in (browser.find_element("id", "live-dot").get_attribute("class")))
    kind = unique("Live").replace("-", "")
    append(api, unique("Order"), (kind, {"live": True}))
    acknowledged = time.monotonic()
    wait_until(lambda: kind in text_of(browser, "#events"), timeout=2.0)
    took = time.monotonic() - acknowledged
    browser.save_screenshot(str(SCREENSHOTS / "all-live.png"))
    assert took < 2.0
    assert severe_logs(browser) == []


def test_the_dead_letter_page_lists_a_poisoned_event_and_replays_it(
    browser: Any, api: str, console_settings: Settings
) -> None:
    from selenium.webdriver.common.by import By

    (group,) = console_settings.dlq_handlers
    stream = unique("Invoice")
    handled: list[str] = []

    def handler(event: RecordedEvent) -> None:
        if event.type == "Poison":
            raise ValueError("cannot digest this invoice")
        handled.append(event.type)

    result = append(api, stream, ("Issued", {}), ("Poison", {"bad": 1}), ("Paid", {}))
    poisoned = result["events"][1]["id"]
    with Subscription(
        group,
        handler,
        categories=[stream.split("-")[0]],
        settings=console_settings,
        retry=RetryPolicy(attempts=2, backoff=0.01),
        install_signal_handlers=False,
    ).start():
        wait_until(lambda: handled == ["Issued", "Paid"], timeout=60)
        groups_api = f"{api}/console/api/groups"
        wait_until(
            lambda: group in httpx.get(groups_api, timeout=30).text,
            timeout=30,
            describe=lambda: httpx.get(groups_api, timeout=30).text,
        )
        browser.get(f"{api}/console#/groups")
        wait_until(
            lambda: shown(browser, "groups") and group in text_of(browser, "main"),
            describe=lambda: text_of(browser, "main"),
        )
        browser.save_screenshot(str(SCREENSHOTS / "groups.png"))
    browser.get(f"{api}/console#/dead-letters/{group}")
    wait_until(lambda: shown(browser, "dead-letters"))
    wait_until(lambda: "cannot digest this invoice" in text_of(browser, "#dead-letters"))
    assert stream in text_of(browser, "#dead-letters")
    browser.save_screenshot(str(SCREENSHOTS / "dead-letters.png"))
    browser.find_element(By.ID, "replay").click()
    wait_until(lambda: "Replayed" in text_of(browser, "#replay-status"), timeout=60)
    assert text_of(browser, "#replay-status") == "Replayed 1: handled"
    assert marker(poisoned).read_text().split() == [stream, "v2", "Poison"]
    replay_again = httpx.post(f"{api}/console/api/groups/{group}/dead-letters/replay", timeout=60)
    assert [r["outcome"] for r in replay_again.json()["replayed"]] == ["already-replayed"]
    assert severe_logs(browser) == []
