"""``/docs`` renders in a real headless Chromium with no network but 127.0.0.1.

The browser resolves no host name (``--host-resolver-rules``) and sends everything that is not
loopback to a proxy that refuses (``--proxy-server``); its performance log must show no request
that left 127.0.0.1. Swagger UI must then have rendered every operation of the document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from kafkastore.config import Settings
from tests.support.browser import headless_chromium

LOADED_WITHIN = 60.0


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chromium(
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",  # nothing listens: anything not loopback fails
        logging={"performance": "ALL"},
    ) as driver:
        yield driver


def requested_urls(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_swagger_ui_renders_every_operation_with_the_network_unplugged(
    settings: Settings, api_server: Callable[..., str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    base = api_server(settings)
    paths = httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    # Swagger UI shows an operation once under each of its tags.
    expected = sum(len(op.get("tags") or [""]) for item in paths.values() for op in item.values())
    browser.get(f"{base}/docs")
    deadline = time.monotonic() + LOADED_WITHIN
    rendered: list[str] = []
    while time.monotonic() < deadline:
        rendered = [
            e.text.replace("\u200b", "")
            for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        ]
        if len(rendered) >= expected:
            break
        time.sleep(0.2)
    assert "Failed to load API definition" not in browser.page_source
    assert {
        "/streams/{stream_id}",
        "/append",
        "/streams/{stream_id}/state",
        "/categories/{category}",
        "/all",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(rendered), rendered
    assert len(rendered) == expected
    urls = requested_urls(browser)
    assert any(u.endswith("/openapi.json") for u in urls)
    assert any("swagger-ui-bundle.js" in u for u in urls)
    outside = [
        u
        for u in urls
        if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname != "127.0.0.1"
    ]
    assert outside == []
