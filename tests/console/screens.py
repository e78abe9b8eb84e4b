"""Screenshots of the console for a person to look at, and the phone-sized check of a page.

Every picture of a test run goes to :data:`SCREENSHOTS` (``.kafkastore/console-screenshots/`` in
the checkout), emptied when the run takes its first one; the run's summary names the folder and
its pictures (``tests/console/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCREENSHOTS = Path(__file__).resolve().parents[2] / ".kafkastore" / "console-screenshots"
DESKTOP = (1280, 900)
PHONE = (390, 844)
"""A phone's screen in CSS pixels (an iPhone 12 to 15)."""

taken: list[str] = []
"""The pictures this run wrote, in order."""


def shoot(browser: Any, name: str) -> Path:
    """Save what ``browser`` shows as ``<name>.png`` in :data:`SCREENSHOTS`."""
    if not taken:  # the run's first picture: the folder holds this run's pictures only
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob("*.png"):
            old.unlink()
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    taken.append(path.name)
    return path


def fits_a_phone(browser: Any, name: str) -> None:
    """The page ``browser`` shows, at a phone's size, has no horizontal overflow; shot as
    ``<name>-phone.png``; the window is put back to :data:`DESKTOP`."""
    browser.set_window_size(*PHONE)
    try:
        inner = browser.execute_script("return window.innerWidth")
        assert inner <= PHONE[0], f"the window is {inner} px wide, not a phone's {PHONE[0]}"
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth,"
            " [...document.querySelectorAll('main *, header *')]"
            "  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)"
            "  .slice(0, 5).map((e) => e.tagName + '.' + e.className + ': '"
            "   + (e.textContent || '').slice(0, 60))]"
        )
        scroll, width, wide = widths
        assert scroll <= width + 1, f"{name}: {scroll} px wide in a {width} px window: {wide}"
        shoot(browser, f"{name}-phone")
    finally:
        browser.set_window_size(*DESKTOP)
