"""The console tests' summary line: where this run's screenshots are (tests/console/screens.py)."""

from __future__ import annotations

import pytest

from tests.console.screens import SCREENSHOTS, taken


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if taken:
        terminalreporter.write_sep("-", "console screenshots")
        terminalreporter.write_line(f"{len(taken)} pictures of the console in {SCREENSHOTS}/:")
        terminalreporter.write_line("  " + ", ".join(taken))
