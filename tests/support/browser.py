"""The distribution's headless Chromium under selenium, for the browser tests.

``dev/bootstrap.sh`` installs ``chromium`` and ``chromium-driver``; nothing downloads a browser of
its own. Without them a test skips, and under ``CI=true`` it fails.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from kafkastore.config import running_in_ci

BASE_ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage")
"""``--no-sandbox``: the tests run as root here."""


@contextlib.contextmanager
def headless_chromium(*arguments: str, logging: Mapping[str, str]) -> Iterator[Any]:
    """A selenium driver of headless Chromium with ``arguments`` and ``goog:loggingPrefs``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = "chromium and chromium-driver are needed (dev/bootstrap.sh installs them)"
        if running_in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (*BASE_ARGUMENTS, *arguments):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", dict(logging))
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()
