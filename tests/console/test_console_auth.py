"""The web console in a real browser with auth on: a sign-in prompt without a token, the live
``$all`` view over fetch()-read Server-Sent Events with the admin token, a refusal for a user
without the right. Screenshots go to ``.kafkastore/console-screenshots/`` (``auth-*.png``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.test_console import SCREENSHOTS, shown, text_of, wait_until
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
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with headless_chromium("--window-size=1280,900", logging={"browser": "ALL"}) as chrome:
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
    browser.save_screenshot(str(SCREENSHOTS / "auth-sign-in.png"))
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
    browser.save_screenshot(str(SCREENSHOTS / "auth-all-live.png"))
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
    browser.find_element("id", "sign-out").click()
    wait_until(lambda: shown(browser, "sign-in"))
    assert browser.execute_script("return sessionStorage.getItem('kafkastore-token')") is None
    sign_in(browser, "kst_000000000000.not-a-real-token")
    wait_until(lambda: "not valid" in text_of(browser, "main"))
    assert errors_other_than_refusals(browser) == []
