"""Restarts with the default consumer settings: a SIGKILLed indexer's replacement resumes in
seconds (static membership), and what the indexer reports while it owns no partition."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from indexer import metrics
from indexer.service import Indexer
from kafkastore import kafka
from kafkastore.client import EventStore
from kafkastore.config import Settings
from kafkastore.records import NewEvent
from tests.support import unique
from tests.support.process import ServiceProcess

RESUME_WITHIN = 10.0
"""Seconds from the restart of a killed indexer until a new append is readable."""


def _readable_within(store: EventStore, stream: str, version: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if len(store.read_stream(stream, from_version=1).events) >= version:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{stream}@{version} not readable within {timeout}s")


@pytest.mark.slow
def test_an_indexer_killed_and_restarted_makes_new_appends_readable_within_seconds(
    settings: Settings, indexer_server: Callable[..., ServiceProcess]
) -> None:
    stream = unique("Order")
    with EventStore.connect(settings=settings) as store:
        first = indexer_server(settings, ready_line="assigned")
        store.append(stream, [NewEvent(type="Placed", data={})], expected_version="no_stream")
        _readable_within(store, stream, 1, 60.0)
        for round_ in range(2):
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            while first.running:
                time.sleep(0.05)
            first = indexer_server(settings, ready_line="indexer started")
            store.append(stream, [NewEvent(type="Placed", data={})], expected_version="any")
            took = _readable_within(store, stream, round_ + 2, RESUME_WITHIN)
            assert took < RESUME_WITHIN


def test_readyz_answers_503_while_the_indexer_group_owns_none_of_the_partitions(
    make_settings: Callable[..., Settings], api_server: Callable[..., str]
) -> None:
    settings = make_settings()
    base = api_server(settings)
    ready = httpx.get(f"{base}/readyz", timeout=10.0)
    assert ready.status_code == 200
    assert ready.json()["indexer"]["members"] == 0
    # A member of the indexer group that consumes another topic: the group is up and owns
    # nothing of ours, as while a rebalance waits for a dead member.
    other = make_settings().topic
    squatter = kafka.consumer(settings, settings.indexer_group)
    try:
        squatter.subscribe([other])
        deadline = time.monotonic() + 60.0
        while True:
            squatter.poll(0.2)
            answer = httpx.get(f"{base}/readyz", timeout=10.0)
            if answer.status_code == 503 or time.monotonic() > deadline:
                break
        assert answer.status_code == 503
        body = answer.json()
        assert body["error"] == "unavailable"
        assert f"owns 0 of {settings.partitions} partitions" in body["message"]
    finally:
        squatter.close()


def test_the_indexer_reports_no_owned_partition_and_no_lag_series_when_it_owns_none(
    settings: Settings,
) -> None:
    indexer = Indexer(settings)
    owned = {"assigned": [0, 1], "partitions": {0: {"lag": 3}, 1: {"lag": 0}}}
    indexer._observe(owned)
    assert metrics.OWNED_PARTITIONS._value.get() == 2
    assert metrics.LAG_OFFSETS.labels("0")._value.get() == 3
    indexer._observe({"assigned": [], "partitions": {}})
    assert metrics.OWNED_PARTITIONS._value.get() == 0
    series = {s.labels.get("partition") for m in metrics.LAG_OFFSETS.collect() for s in m.samples}
    assert "0" not in series and "1" not in series
