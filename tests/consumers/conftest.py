"""Fixtures of the consumer tests (services and settings come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kafkastore.config import Settings
from tests.support.wire import ManualWriter


@pytest.fixture
def writer(settings: Settings) -> Iterator[ManualWriter]:
    """A manual writer (the append protocol by hand) on the test's own topic."""
    with ManualWriter(settings) as w:
        yield w
