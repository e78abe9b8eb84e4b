"""Indexer metrics: the API's lag collector and the indexer's own counters."""

from __future__ import annotations

from prometheus_client import REGISTRY

from indexer.metrics import IndexLagCollector
from kafkastore.config import Settings
from tests.indexer.helpers import running_indexer, wait_for_count
from tests.support import unique
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
    indexed_before = REGISTRY.get_sample_value("kafkastore_indexer_events_indexed_total") or 0
    with running_indexer(settings) as ix:
        assert wait_for_count(settings.database_url, [stream], 3, indexer=ix) == 3
    after = _lags(IndexLagCollector(settings, cache_for=0))
    indexed_after = REGISTRY.get_sample_value("kafkastore_indexer_events_indexed_total") or 0
    assert before[str(produced[0].partition)] == 3
    assert sum(before.values()) == 3
    assert set(after.values()) == {0}
    assert indexed_after - indexed_before >= 3
