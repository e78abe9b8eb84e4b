from __future__ import annotations

from collections.abc import Iterator

import pytest

from kafkastore.client import EventStore
from kafkastore.config import Settings


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    with EventStore(settings) as store:
        yield store
