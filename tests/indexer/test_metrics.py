"""Indexer metrics: the API's lag collector, the indexer's own counters and its endpoint."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from fastapi.testclient import TestClient

from dev.process import free_port
from indexer.metrics import INDEXER_REGISTRY, IndexLagCollector, serve_indexer_metrics
from kafkastore.config import Settings
from kafkastore.http import create_app
from kafkastore.verdict import PhantomReason
from tests.indexer.helpers import running_indexer, wait_for_count
from tests.support import ServiceProcess, unique
from tests.support.wire import ManualWriter


def _lags(collector: IndexLagCollector) -> dict[str, float]:
    families = {f.name: f for f in collector.collect()}
    return {
        s.labels["partition"]: s.value for s in families["kafkastore_index_lag_offsets"].samples
    }


def test_index_lag_is_the_distance_from_the_high_watermarks_and_drops_to_zero(
    settings: Settings,
) -> None:
    stream = unique("Lag")
    with ManualWriter(settings) as w:
        produced = w.append(stream, [("A", {}), ("B", {}), ("C", {})])
    before = _lags(IndexLagCollector(settings, cache_for=0))
    indexed_before = (
        INDEXER_REGISTRY.get_sample_value("kafkastore_indexer_events_indexed_total") or 0
    )
    with running_indexer(settings) as ix:
        assert wait_for_count(settings.database_url, [stream], 3, indexer=ix) == 3
    after = _lags(IndexLagCollector(settings, cache_for=0))
    indexed_after = (
        INDEXER_REGISTRY.get_sample_value("kafkastore_indexer_events_indexed_total") or 0
    )
    assert before[str(produced[0].partition)] == 3
    assert sum(before.values()) == 3
    assert set(after.values()) == {0}
    assert indexed_after - indexed_before >= 3


def _scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_the_indexer_process_serves_its_own_counters_on_loopback(
    make_settings: Callable[..., Settings],
    indexer_server: Callable[..., ServiceProcess],
) -> None:
    settings = make_settings(metrics_port=free_port())
    stream = unique("Counted")
    with ManualWriter(settings) as w:
        w.append(stream, [("A", {}), ("B", {})])
        w.phantom_aborted(stream, [("Ghost", {})])
    indexer_server(settings, ready_line="indexer metrics on http://127.0.0.1:")
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    deadline = time.monotonic() + 60
    samples = _scrape(url)
    while samples.get("kafkastore_indexer_events_indexed_total", 0) < 2:
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)
        samples = _scrape(url)
    assert samples["kafkastore_indexer_events_indexed_total"] == 2
    for reason in PhantomReason:
        assert f'kafkastore_indexer_phantoms_skipped_total{{reason="{reason.value}"}}' in samples
    assert "process_cpu_seconds_total" in samples


def test_the_api_never_exports_counters_of_the_indexer_it_does_not_run(
    settings: Settings,
) -> None:
    # An indexer ran in this process before (other tests): still nothing of it on the API.
    with running_indexer(settings):
        pass
    text = TestClient(create_app(settings)).get("/metrics").text
    assert "kafkastore_indexer_" not in text
    assert "kafkastore_read_seconds" in text


def test_the_indexer_metrics_endpoint_binds_loopback_unless_configured(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(create_topic=False, metrics_port=free_port())
    server = serve_indexer_metrics(settings)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
    wide = make_settings(create_topic=False, metrics_port=free_port(), metrics_host="0.0.0.0")
    server = serve_indexer_metrics(wide)
    try:
        assert server.server_address[0] == "0.0.0.0"
    finally:
        server.shutdown()
        server.server_close()
