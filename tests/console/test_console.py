"""The web console in a real browser: headless Chromium (the distribution's) driven by selenium.

Every page is opened, at a desktop's and at a phone's size (no horizontal overflow), and
screenshots of each go to ``.kafkastore/console-screenshots/`` (tests/console/screens.py; the
run's summary names the folder). The README's ``EventSource`` example runs here, as written,
on a page of the API's origin. Without Chromium and chromedriver the tests skip, and fail under
``CI=true``.
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
from tests.console.screens import DESKTOP, fits_a_phone, shoot
from tests.support import unique
from tests.support.browser import headless_chromium
from tests.support.serving import serving
from tests.support.topics import own_settings

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
    size = "--window-size={},{}".format(*DESKTOP)
    with headless_chromium(size, logging={"browser": "ALL"}) as chrome:
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


def indexed(api: str, stream: str, version: int) -> None:
    """Wait until the index holds ``stream`` up to ``version`` (read-your-writes)."""
    read = httpx.get(f"{api}/streams/{stream}", params={"min_version": version}, timeout=30)
    assert read.status_code == 200 and read.headers.get("x-index-behind") is None, read.text


def load(browser: Any, url: str) -> None:
    """Load the console afresh at ``url`` (a ``get`` of the page already shown with only
    another fragment would not reload it, and its live feeds would go on)."""
    browser.get("about:blank")
    browser.get(url)


def live(browser: Any) -> bool:
    """Whether the live view's feed is open (its dot is green)."""
    return "off" not in browser.find_element("id", "live-dot").get_attribute("class")


def positions(browser: Any) -> list[int]:
    """The global positions of the events shown, top to bottom."""
    return [
        int(p)
        for p in browser.execute_script(
            "return [...document.querySelectorAll('#events .event')].map((e) => e.dataset.position)"
        )
    ]


def test_every_console_page_loads_without_javascript_errors_and_fits_a_phone(
    browser: Any, api: str
) -> None:
    # Long words everywhere (ids, a type, data) must wrap, not widen a phone's page.
    category = unique("Order").replace("-", "") + "WithAVeryLongCategoryName"
    stream = f"{category}-{'0123456789abcdef' * 5}"
    result = append(
        api,
        stream,
        ("OrderPlacedWithAVeryLongEventTypeNameThatDoesNotBreak", {"note": "y" * 200}),
        ("OrderPaid", {"receipt": "https://example.com/" + "a" * 150}),
    )
    indexed(api, stream, 2)
    pages = {
        "overview": "#/",
        "streams": f"#/streams?prefix={stream}",
        "stream": f"#/stream/{stream}",
        "all": "#/all",
        "category": f"#/category/{category}",
        "event": f"#/event/{result['events'][1]['id']}",
        "groups": "#/groups",
        "dead-letters": f"#/dead-letters/{unique('nobody')}",
    }
    browser.get(f"{api}/console")
    browser.get_log("browser")  # start clean
    for name, fragment in pages.items():
        browser.get(f"{api}/console{fragment}")
        wait_until(
            lambda name=name: shown(browser, name), describe=lambda: text_of(browser, "main")
        )
        assert "Error" not in text_of(browser, "main"), name
        if name in ("stream", "category", "event"):
            wait_until(lambda: "OrderPaid" in text_of(browser, "#main"))
        shoot(browser, name)
        fits_a_phone(browser, name)
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
    indexed(api, stream, 2)
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
    shoot(browser, "stream-metadata")
    fits_a_phone(browser, "stream-metadata")
    assert severe_logs(browser) == []


def test_an_event_appended_through_the_api_appears_live_on_all_within_two_seconds(
    browser: Any, api: str
) -> None:
    browser.get(f"{api}/console#/all")
    wait_until(lambda: live(browser))
    kind = unique("Live").replace("-", "")
    append(api, unique("Order"), (kind, {"live": True}))
    acknowledged = time.monotonic()
    wait_until(lambda: kind in text_of(browser, "#events"), timeout=2.0)
    took = time.monotonic() - acknowledged
    shoot(browser, "all-live")
    assert took < 2.0
    assert severe_logs(browser) == []


def test_the_all_view_opens_on_the_last_twenty_events_past_hidden_positions(
    browser: Any, api: str
) -> None:
    kept, gone = unique("Order"), unique("Order")
    append(api, kept, *(("Placed", {"n": n}) for n in range(1, 21)))
    append(api, gone, *(("Placed", {"n": n}) for n in range(1, 26)))
    indexed(api, gone, 25)
    # $all's last 25 positions are hidden now: "the head - 19" would show none of them.
    assert httpx.delete(f"{api}/streams/{gone}", timeout=30).status_code == 204

    load(browser, f"{api}/console#/all")
    wait_until(lambda: shown(browser, "all") and live(browser))
    wait_until(lambda: len(positions(browser)) >= 20, describe=lambda: str(positions(browser)))

    shown_positions = positions(browser)
    page = httpx.get(
        f"{api}/all", params={"from_position": shown_positions[-1], "limit": 100}, timeout=30
    ).json()
    # What reads show from the oldest event shown on, newest first (events appended by others
    # meanwhile arrive live and are shown too), and none of the deleted stream's.
    read = [e["global_position"] for e in page["events"]]
    assert shown_positions == [p for p in read if p <= shown_positions[0]][::-1]
    assert gone not in text_of(browser, "#events")
    assert severe_logs(browser) == []


def test_a_category_view_starts_at_its_last_events_pages_older_and_updates_live(
    browser: Any, api: str
) -> None:
    from selenium.webdriver.common.by import By

    category = unique("Cart").replace("-", "")
    kept, gone = f"{category}-kept", f"{category}-gone"
    older = append(api, kept, *(("Added", {"n": n}) for n in range(1, 31)))
    append(api, gone, *(("Added", {"n": n}) for n in range(1, 26)))
    indexed(api, gone, 25)
    # The category's last 25 positions are hidden now: the view must look further back.
    assert httpx.delete(f"{api}/streams/{gone}", timeout=30).status_code == 204
    kept_positions = [
        e["global_position"]
        for e in httpx.get(f"{api}/streams/{kept}", params={"limit": 30}, timeout=30).json()[
            "events"
        ]
    ]
    assert len(kept_positions) == len(older["events"]) == 30

    load(browser, f"{api}/console#/category/{category}")
    wait_until(lambda: shown(browser, "category") and live(browser))
    wait_until(lambda: len(positions(browser)) >= 20, describe=lambda: str(positions(browser)))
    assert positions(browser) == kept_positions[-20:][::-1]  # the last 20, newest first
    assert gone not in text_of(browser, "#events")

    kind = unique("Live").replace("-", "")
    append(api, f"{category}-new", (kind, {"live": True}))
    acknowledged = time.monotonic()
    wait_until(lambda: kind in text_of(browser, "#events"), timeout=2.0)
    took = time.monotonic() - acknowledged
    shoot(browser, "category-live")
    assert took < 2.0

    browser.find_element(By.ID, "older").click()
    wait_until(lambda: len(positions(browser)) == 31, describe=lambda: str(positions(browser)))
    assert positions(browser)[1:] == kept_positions[::-1]
    wait_until(lambda: browser.find_element(By.ID, "older").get_attribute("disabled"))
    shoot(browser, "category-older")
    fits_a_phone(browser, "category-older")
    assert severe_logs(browser) == []


def test_searching_by_an_event_id_lands_on_that_event(browser: Any, api: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    stream = unique("Order")
    result = append(api, stream, ("OrderPlaced", {"total": 7}), ("OrderShipped", {"by": "van"}))
    indexed(api, stream, 2)
    wanted = result["events"][1]["id"]
    browser.get(f"{api}/console#/")
    wait_until(lambda: shown(browser, "overview"))
    field = browser.find_element(By.ID, "search-id")
    field.send_keys(wanted, Keys.ENTER)

    wait_until(lambda: shown(browser, "event"), describe=lambda: text_of(browser, "main"))
    assert browser.execute_script("return location.hash") == f"#/event/{wanted}"
    card = text_of(browser, "main .event")
    assert "OrderShipped" in card and stream in card and wanted in card and '"by": "van"' in card
    assert "OrderPlaced" not in card
    shoot(browser, "event-search")
    browser.find_element(By.LINK_TEXT, stream).click()  # on to its stream
    wait_until(lambda: shown(browser, "stream") and "OrderShipped" in text_of(browser, "#events"))
    assert severe_logs(browser) == []


def readme_block(test_file: str) -> str:
    """The README's code block whose not-run marker names ``test_file`` (exactly one)."""
    from tests.test_readme import README, blocks

    (block,) = [b for b in blocks(README.read_text()) if test_file in (b.not_run or "")]
    assert block.language == "js"
    return block.code


COLLECT_CONSOLE_LOG = """
window.logged = [];
console.log = (...args) => window.logged.push(args);
"""


def test_the_readme_eventsource_example_runs_in_a_browser_as_written(
    browser: Any, api: str
) -> None:
    code = readme_block("tests/console/test_console.py")
    stream = unique("Order")
    browser.get(f"{api}/console#/streams")  # a page of the API's origin
    wait_until(lambda: shown(browser, "streams"))
    browser.get_log("browser")
    browser.execute_script(COLLECT_CONSOLE_LOG + code)
    append(api, stream, ("OrderPlaced", {"total": 1}), ("OrderPaid", {"amount": 1}))
    append(api, stream, ("OrderPlaced", {"total": 2}))

    def ours() -> list[Any]:
        logged = browser.execute_script("return window.logged")
        return [entry for entry in logged if entry[1] == stream]

    wait_until(lambda: len(ours()) >= 2, describe=lambda: str(ours()))
    logged = browser.execute_script("return window.logged")
    assert [(kind, data) for _p, _s, kind, data in ours()] == [
        ("OrderPlaced", {"total": 1}),
        ("OrderPlaced", {"total": 2}),
    ]
    assert {kind for _p, _s, kind, _d in logged} == {"OrderPlaced"}  # the type filter
    first, second = (p for p, *_ in ours())
    assert 0 < first < second
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
        shoot(browser, "groups-members")
        fits_a_phone(browser, "groups-members")
    browser.get(f"{api}/console#/dead-letters/{group}")
    wait_until(lambda: shown(browser, "dead-letters"))
    wait_until(lambda: "cannot digest this invoice" in text_of(browser, "#dead-letters"))
    assert stream in text_of(browser, "#dead-letters")
    shoot(browser, "dead-letters-poisoned")
    fits_a_phone(browser, "dead-letters-poisoned")
    browser.find_element(By.ID, "replay").click()
    wait_until(lambda: "Replayed" in text_of(browser, "#replay-status"), timeout=60)
    assert text_of(browser, "#replay-status") == "Replayed 1: handled"
    assert marker(poisoned).read_text().split() == [stream, "v2", "Poison"]
    replay_again = httpx.post(f"{api}/console/api/groups/{group}/dead-letters/replay", timeout=60)
    assert [r["outcome"] for r in replay_again.json()["replayed"]] == ["already-replayed"]
    assert severe_logs(browser) == []
