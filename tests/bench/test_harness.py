"""The benchmark harness's pure pieces: percentile math, the JSON shape, the markdown table.

No timings are asserted here (benchmarks are not tests); `make bench` produces the figures.
"""

from __future__ import annotations

import json
import os

import orjson

from bench import procfs, report
from bench.payload import OwnedStreams, event_data, expected, split, stream_ids
from bench.stats import percentile, summarize


def _results() -> dict[str, dict[str, object]]:
    return {
        "kafkastore_append_inproc": {"events_per_s": 12_000.0, "p50_ms": 4.0, "p99_ms": 20.0},
        "raw_kafka_produce": {"events_per_s": 40_000.0, "p50_ms": 1.0, "p99_ms": 5.0},
        "naive_postgres_store": {"events_per_s": 2_000.0, "p50_ms": 9.0, "p99_ms": 30.0},
        "eventsourcing_postgres": {"events_per_s": 3_000.0, "p50_ms": 8.0, "p99_ms": 25.0},
        "kafkastore_indexer_catchup": {"events_per_s": 9_000.0},
        "kafkastore_index_lag": {"events_per_s": 6_000.0, "p50_ms": 80.0, "p99_ms": 400.0},
    }


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(list(range(1, 101)), 99) == 99.01


def test_percentile_of_no_samples_is_none_and_of_one_sample_is_that_sample() -> None:
    assert percentile([], 99) is None
    assert percentile([7.0], 99.9) == 7.0


def test_summary_sorts_the_latencies_and_counts_the_samples() -> None:
    summary = summarize([5.0, 1.0, 3.0])
    assert summary["p50_ms"] == 3.0
    assert summary["max_ms"] == 5.0
    assert summary["samples"] == 3
    assert summarize([])["p99_ms"] is None


def test_ratios_divide_kafkastore_by_the_baseline_of_the_same_shape() -> None:
    ratios = report.ratios(_results())
    assert ratios["kafkastore_append_inproc"]["raw_kafka"] == 0.3
    assert ratios["kafkastore_append_inproc"]["naive"] == 6.0
    assert ratios["kafkastore_append_inproc"]["eventsourcing"] == 4.0
    assert ratios["kafkastore_append_inproc"]["naive_batched"] is None


def test_targets_say_which_floors_of_the_issue_are_met() -> None:
    met = {t["target"]: t["met"] for t in report.targets(_results())}
    assert met["kafkastore_append_inproc / naive_postgres_store >= 5"] is True
    assert met["kafkastore_append_inproc / raw_kafka_produce >= 0.15"] is True
    assert met["kafkastore_indexer_catchup / kafkastore_append_inproc >= 0.8"] is False
    assert met["kafkastore_index_lag p99 < 1000 ms"] is True


def test_document_has_the_json_shape_of_the_issue() -> None:
    doc = report.document({"cores": 2}, {"mode": "quick"}, _results())
    decoded = json.loads(json.dumps(doc))
    assert set(decoded) >= {"machine", "results", "ratios", "targets"}
    assert decoded["results"]["kafkastore_append_inproc"]["events_per_s"] == 12_000.0


def test_markdown_shows_each_workload_its_ratios_and_missed_targets() -> None:
    text = report.markdown(report.document({"cores": 2}, {"mode": "quick"}, _results()))
    for name in _results():
        assert f"`{name}`" in text
    assert "| `kafkastore_append_inproc` | 12,000 | 0.30x | 6.00x | - | 4.00x |" in text
    assert "**missed**" in text


def test_each_producer_owns_disjoint_streams_and_tracks_their_versions() -> None:
    owners = split(stream_ids("s", 10), 3)
    assert sorted(s for o in owners for s in o.streams) == stream_ids("s", 10)
    owned = OwnedStreams(["a", "b"])
    first, version = owned.take()
    assert (first, version) == ("a", 0)
    assert owned.take()[0] == "b"
    owned.done("a", 10)
    assert owned.take() == ("a", 10)
    assert expected(0) == "no_stream"
    assert expected(10) == 10


def test_events_are_about_200_bytes_of_json() -> None:
    assert 180 <= len(orjson.dumps(event_data(123_456))) <= 220


def test_proc_readers_see_this_process() -> None:
    peak = procfs.peak_rss_mb(os.getpid())
    assert peak is not None and peak > 0
    window = procfs.CpuWindow({"bench": os.getpid()})
    window.start()
    sum(range(100_000))
    cores = window.stop()["cores_by_process"]
    assert isinstance(cores, dict)
    assert set(cores) == {"bench", "other"}
