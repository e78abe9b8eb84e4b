"""The web console in a real browser with auth on: a sign-in prompt without a token, the live
``$all`` view over fetch()-read Server-Sent Events with the admin token, a refusal for a user
without the right, a plain user's stream page and a category view without the streams their
ACLs deny them. The README's ``fetch()`` example runs here, as written, with a token in
``sessionStorage``. Screenshots go to ``.kafkastore/console-screenshots/`` (``auth-*.png``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.screens import DESKTOP, fits_a_phone, shoot
from tests.console.test_console import (
    COLLECT_CONSOLE_LOG,
    live,
    positions,
    readme_block,
    shown,
    text_of,
    wait_until,
)
from tests.support import unique
from tests.support.browser import headless_chromium
from tests.support.serving import serving, users_with_tokens
from tests.support.topics import own_settings


@pytest.fixture(scope="module")
def secured(
    kafka_bootstrap: str, database_url: str, logs_dir: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """``kafkastore serve`` with auth on and an indexer; its URL and tokens by role."""
    settings = own_settings(kafka_bootstrap, database_url, auth="on")
    tokens = users_with_tokens(database_url, {"admin": ("admin",), "plain": ()}, unique("console"))
    with serving(settings, logs_dir / f"console-auth-{settings.topic}.log") as url:
        yield url, tokens


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    size = "--window-size={},{}".format(*DESKTOP)
    with headless_chromium(size, logging={"browser": "ALL"}) as chrome:
        yield chrome


def sign_in(browser: Any, token: str) -> None:
    from selenium.webdriver.common.by import By

    wait_until(lambda: shown(browser, "sign-in"))
    field = browser.find_element(By.ID, "token-input")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()


def errors_other_than_refusals(browser: Any) -> list[str]:
    """SEVERE browser logs, less the console's own 401/403 answers (Chromium logs each)."""
    return [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and " 401 " not in e["message"] and " 403 " not in e["message"]
    ]


def test_without_a_token_the_console_asks_to_sign_in(
    browser: Any, secured: tuple[str, dict[str, str]]
) -> None:
    url, _ = secured
    browser.get(f"{url}/console#/all")
    wait_until(lambda: shown(browser, "sign-in"))
    assert "authentication on" in text_of(browser, "main")
    assert browser.find_element("id", "token-input").get_attribute("type") == "password"
    shoot(browser, "auth-sign-in")
    fits_a_phone(browser, "auth-sign-in")
    assert errors_other_than_refusals(browser) == []


def test_with_the_admin_token_the_live_all_view_updates(
    browser: Any, secured: tuple[str, dict[str, str]]
) -> None:
    url, tokens = secured
    browser.get(f"{url}/console#/all")
    sign_in(browser, tokens["admin"])
    wait_until(lambda: shown(browser, "all"))
    assert (
        browser.execute_script("return sessionStorage.getItem('kafkastore-token')")
        == (tokens["admin"])
    )
    wait_until(lambda: "off" not in browser.find_element("id", "live-dot").get_attribute("class"))
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    order = unique("Order")
    for kind, data in (("OrderPlaced", {"total": 12, "lines": 2}), ("OrderPaid", {"amount": 12})):
        body = {"events": [{"type": kind, "data": data, "metadata": {"by": "console test"}}]}
        httpx.post(f"{url}/streams/{order}", json=body, headers=admin, timeout=30)
    wait_until(lambda: "OrderPaid" in text_of(browser, "#events"))
    kind = unique("Secured").replace("-", "")
    answer = httpx.post(
        f"{url}/streams/{unique('Order')}",
        json={"events": [{"type": kind, "data": {"live": True}}]},
        headers=admin,
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    acknowledged = time.monotonic()
    wait_until(lambda: kind in text_of(browser, "#events"), timeout=2.0)
    took = time.monotonic() - acknowledged
    shoot(browser, "auth-all-live")
    fits_a_phone(browser, "auth-all-live")
    assert took < 2.0
    # the other pages read with the token too
    browser.get(f"{url}/console#/streams")
    wait_until(lambda: shown(browser, "streams"))
    assert "Error" not in text_of(browser, "main")
    assert errors_other_than_refusals(browser) == []


def test_a_user_without_ops_is_refused_the_all_view_and_can_sign_out(
    browser: Any, secured: tuple[str, dict[str, str]]
) -> None:
    url, tokens = secured
    browser.get(f"{url}/console#/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{url}/console#/all")
    sign_in(browser, tokens["plain"])
    wait_until(lambda: browser.find_elements("id", "forbidden"))
    assert "Forbidden" in text_of(browser, "main")
    shoot(browser, "auth-forbidden")
    fits_a_phone(browser, "auth-forbidden")
    browser.find_element("id", "sign-out").click()
    wait_until(lambda: shown(browser, "sign-in"))
    assert browser.execute_script("return sessionStorage.getItem('kafkastore-token')") is None
    sign_in(browser, "kst_000000000000.not-a-real-token")
    wait_until(lambda: "not valid" in text_of(browser, "main"))
    assert errors_other_than_refusals(browser) == []


def as_admin(url: str, tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['admin']}"}


def append(url: str, tokens: dict[str, str], stream: str, *types: str) -> dict[str, Any]:
    body = {"events": [{"type": t, "data": {"in": stream}} for t in types]}
    answer = httpx.post(
        f"{url}/streams/{stream}", json=body, headers=as_admin(url, tokens), timeout=30
    )
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def indexed(url: str, tokens: dict[str, str], stream: str, version: int) -> None:
    read = httpx.get(
        f"{url}/streams/{stream}",
        params={"min_version": version},
        headers=as_admin(url, tokens),
        timeout=30,
    )
    assert read.status_code == 200 and read.headers.get("x-index-behind") is None, read.text


def signed_in_as_plain(browser: Any, url: str, tokens: dict[str, str], fragment: str) -> None:
    browser.get(f"{url}/console#/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{url}/console{fragment}")
    sign_in(browser, tokens["plain"])


def test_a_plain_user_sees_the_events_of_a_stream_they_may_read(
    browser: Any, secured: tuple[str, dict[str, str]]
) -> None:
    url, tokens = secured
    stream = unique("Order")
    append(url, tokens, stream, "OrderPlaced", "OrderPaid")
    indexed(url, tokens, stream, 2)

    signed_in_as_plain(browser, url, tokens, f"#/stream/{stream}")

    wait_until(lambda: shown(browser, "stream"), describe=lambda: text_of(browser, "main"))
    events = text_of(browser, "#events")
    assert "OrderPlaced" in events and "OrderPaid" in events
    assert "Forbidden" not in text_of(browser, "main")
    shoot(browser, "auth-plain-stream")
    fits_a_phone(browser, "auth-plain-stream")
    assert errors_other_than_refusals(browser) == []


def test_a_category_view_leaves_out_the_streams_an_acl_denies_the_user(
    browser: Any, secured: tuple[str, dict[str, str]]
) -> None:
    url, tokens = secured
    category = unique("Payroll").replace("-", "")
    open_, secret = f"{category}-open", f"{category}-secret"
    append(url, tokens, open_, "Paid")
    append(url, tokens, secret, "Paid", "Paid")
    put = httpx.put(
        f"{url}/streams/{secret}/metadata",
        json={"expected_metadata_version": 0, "acl": {"read": ["$admin"]}},
        headers=as_admin(url, tokens),
        timeout=30,
    )
    assert put.status_code == 200, put.text
    indexed(url, tokens, secret, 2)

    signed_in_as_plain(browser, url, tokens, f"#/category/{category}")
    wait_until(lambda: shown(browser, "category") and live(browser))
    wait_until(lambda: open_ in text_of(browser, "#events"))
    # Live: the denied stream's event comes first, the readable one after it.
    append(url, tokens, secret, "Raised")
    kind = unique("Bonus").replace("-", "")
    append(url, tokens, open_, kind)
    wait_until(lambda: kind in text_of(browser, "#events"))

    shown_events = text_of(browser, "#events")
    assert secret not in shown_events and "Raised" not in shown_events
    assert len(positions(browser)) == 2  # the open stream's two events, nothing else
    shoot(browser, "auth-category-acl")
    fits_a_phone(browser, "auth-category-acl")
    assert errors_other_than_refusals(browser) == []


def test_the_readme_fetch_example_follows_all_with_a_token_from_session_storage(
    browser: Any, secured: tuple[str, dict[str, str]]
) -> None:
    url, tokens = secured
    code = readme_block("tests/console/test_console_auth.py")
    browser.get(f"{url}/console#/")  # a page of the API's origin
    browser.execute_script("sessionStorage.clear()")
    browser.execute_script("sessionStorage.setItem('token', arguments[0])", tokens["admin"])
    browser.execute_script(COLLECT_CONSOLE_LOG + code)
    kinds = [unique("Readme").replace("-", "") for _ in range(2)]
    append(url, tokens, unique("Order"), *kinds)

    def logged() -> list[Any]:
        return list(browser.execute_script("return window.logged"))

    wait_until(
        lambda: [kinds[0]] in logged() and [kinds[1]] in logged(),
        describe=lambda: str(logged()[-5:]),
    )
    ours = [entry for entry in logged() if entry[0] in kinds]
    assert ours == [[kinds[0]], [kinds[1]]]  # each once, in order
    assert errors_other_than_refusals(browser) == []
