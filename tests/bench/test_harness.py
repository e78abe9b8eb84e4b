"""The benchmark harness's pure pieces: percentile math, the JSON shape, the markdown table.

No timings are asserted here (benchmarks are not tests); `make bench` produces the figures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path

import orjson

from bench import compare, costs, plot, procfs, ramp, report, sections, targets
from bench.drive import Probe
from bench.payload import OwnedStreams, event_data, expected, split, stream_ids
from bench.stats import percentile, summarize
from bench.workloads import scale


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


# ------------------------------------------------------------------ CPU per event (issue 14)


def _cpu(window_s: float, **seconds: float) -> dict[str, object]:
    return {"window_s": window_s, "cpu_s_by_process": seconds}


def test_cpu_per_event_divides_each_roles_cpu_time_by_the_events_of_the_window() -> None:
    # 10 s at 1 000 events/s = 10 000 events; the broker's 0.5 s is 50 µs per event.
    cpu = _cpu(10.0, kafka=0.5, postgresql=0.2, bench=0.3, other=4.0)
    cost = costs.per_event_us(cpu, 1000.0)
    assert cost == {
        "kafka": 50.0,
        "postgresql": 20.0,
        "bench": 30.0,
        "other": 400.0,
        "total": 100.0,
    }
    assert costs.per_event_us(cpu, 0.0) is None
    assert costs.per_event_us({}, 1000.0) is None


def test_the_bench_process_is_split_by_thread_group_outside_the_total() -> None:
    cpu = {
        **_cpu(10.0, bench=0.6),
        "cpu_s_by_thread_group": {"bench": {"main": 0.1, "threads": 0.5}},
    }
    cost = costs.per_event_us(cpu, 1000.0)
    assert cost is not None
    assert (cost["bench.main"], cost["bench.threads"], cost["total"]) == (10.0, 50.0, 60.0)
    before = {"main": 10, "librdkafka": 5, "total": 40}
    after = {"main": 10 + procfs.CLK_TCK, "librdkafka": 5, "total": 40 + 3 * procfs.CLK_TCK}
    assert procfs.split_seconds(before, after) == {"main": 1.0, "librdkafka": 0.0, "threads": 2.0}
    groups = procfs.thread_groups(os.getpid())
    assert groups["total"] >= groups["main"] > 0


def test_stack_cores_leave_out_processes_outside_and_the_load_generator() -> None:
    cpu = _cpu(2.0, kafka=0.1, api=0.05, bench=1.0, other=3.0)
    assert costs.stack_cores(cpu) == 0.575
    assert costs.stack_cores(cpu, without=frozenset({"bench"})) == 0.075


def test_older_results_get_their_cpu_seconds_from_cores_and_window() -> None:
    cpu = {"window_s": 4.0, "cores_by_process": {"kafka": 0.25}}
    assert costs.cpu_seconds(cpu) == {"kafka": 1.0}


def test_the_document_annotates_cpu_per_event_and_compares_it_with_the_baselines() -> None:
    results = _results()
    results["kafkastore_append_inproc"]["cpu"] = _cpu(10.0, bench=6.0, kafka=6.0)  # 100 µs
    results["naive_postgres_store"]["cpu"] = _cpu(10.0, postgresql=4.0)  # 200 µs
    results["raw_kafka_flat_out"] = {"events_per_s": 100_000.0, "cpu": _cpu(10.0, kafka=20.0)}
    doc = report.document({"cores": 2}, {"mode": "quick"}, results)
    ours = doc["results"]["kafkastore_append_inproc"]["cpu_us_per_event"]
    assert ours["total"] == 100.0
    assert doc["cpu_ratios"]["kafkastore_append_inproc"]["naive"] == 0.5
    assert doc["cpu_ratios"]["kafkastore_append_inproc"]["flat_out"] == 5.0
    assert doc["cpu_ratios"]["kafkastore_append_inproc"]["raw_kafka"] is None
    text = report.markdown(doc)
    assert "## CPU per event" in text
    assert "| `kafkastore_append_inproc` | - | 0.50x | - | - | 5.00x |" in text


# ------------------------------------------------------------------------- sustained ramp


def _step(offered: float, acked: float, p99: float, start: int | None, end: int | None) -> dict:
    return {
        "offered_events_per_s": offered,
        "acked_events_per_s": acked,
        "append_p99_ms": p99,
        "backlog_start": start,
        "backlog_end": end,
        "duration_s": 10.0,
    }


def test_a_step_is_sustained_when_rate_latency_and_backlog_all_hold() -> None:
    assert ramp.sustained(_step(10_000, 9_900, 40.0, 100, 900))
    assert not ramp.sustained(_step(10_000, 9_000, 40.0, 100, 900))  # acked < 95%
    assert not ramp.sustained(_step(10_000, 9_900, 100.0, 100, 900))  # p99 not < 100 ms
    # allowed growth: 5% of 10 s x 10 000 events/s + 1 000 = 6 000 events
    assert ramp.sustained(_step(10_000, 9_900, 40.0, 0, 6_000))
    assert not ramp.sustained(_step(10_000, 9_900, 40.0, 0, 6_001))
    verdict = ramp.verdict(_step(10_000, 9_900, 40.0, None, None))
    assert verdict["backlog_not_growing"] is None  # no index: not judged
    assert ramp.sustained(_step(10_000, 9_900, 40.0, None, None))


def test_the_headline_is_the_highest_sustained_step_even_after_a_failed_one() -> None:
    steps = [
        _step(5_000, 5_000, 10.0, 0, 0),
        _step(10_000, 8_000, 300.0, 0, 50_000),
        _step(15_000, 15_000, 20.0, 0, 10),
    ]
    assert ramp.headline(steps) == 15_000
    assert ramp.headline(steps[1:2]) is None
    summary = ramp.summary(steps[1:2])
    assert summary["sustained_events_per_s"] is None
    assert summary["figures_of_step_events_per_s"] == 10_000  # the first step's figures


def test_the_lag_tracker_times_samples_until_the_checkpoint_passes_them() -> None:
    checkpoints = {0: 0, 1: 0}
    tracker = ramp.LagTracker(lambda: dict(checkpoints))
    tracker.acked((0, 9), sample=True, step=0, now=100.0)  # partition 0, offsets up to 9
    tracker.acked((1, 4), sample=False, step=0, now=100.0)
    tracker.acked(None, sample=True, step=0, now=100.0)  # no index to follow: ignored
    tracker.poll(now=100.05)
    assert tracker.backlog() == 15  # 10 + 5 acknowledged, nothing indexed
    assert tracker.pending() == 1
    checkpoints[0] = 9  # offset 9 not yet passed
    tracker.poll(now=100.1)
    assert tracker.lags_ms == {}
    checkpoints[0] = 10
    tracker.poll(now=100.25)
    assert [round(x, 3) for x in tracker.lags_ms[0]] == [250.0]
    assert tracker.backlog() == 5
    assert tracker.indexed() == 10


def test_a_tiny_ramp_against_a_fake_system_measures_each_step() -> None:
    checkpoints: dict[int, int] = {}
    offsets = itertools.count()
    tracker = ramp.LagTracker(lambda: dict(checkpoints))

    async def op(i: int) -> tuple[int, ramp.Ack]:
        await asyncio.sleep(0.001)
        offset = next(offsets)
        checkpoints[0] = offset + 1  # an index that keeps up at once
        return 10, (0, offset)

    tracker.start()
    try:
        steps = asyncio.run(
            ramp.run(
                op=op,
                steps=(500, 1000),
                per_append=10,
                step_s=0.5,
                probe=lambda: Probe({"bench": os.getpid()}, ()),
                tracker=tracker,
                warmup_s=0.2,
            )
        )
    finally:
        tracker.stop()
    assert [s["offered_events_per_s"] for s in steps] == [500, 1000]  # warm-up not recorded
    for s in steps:
        assert s["acked_events_per_s"] > 0
        assert s["appends_completed"] > 0
        assert s["index_lag_samples"] > 0
        assert set(s["verdict"]) == {"rate_kept", "p99_under_100ms", "backlog_not_growing"}
        assert "cpu" in s


def test_the_plot_of_the_ramp_is_a_png(tmp_path: Path) -> None:
    step = {**_step(5_000, 5_000, 10.0, 0, 0), "index_lag_p99_ms": 30.0}
    results = {
        "kafkastore_sustained": {"steps": [step, {**step, "offered_events_per_s": 10_000}]},
        "naive_postgres_sustained": {"steps": [step]},
    }
    path = plot.sustained_ramp(results, tmp_path / "ramp.png")
    assert path is not None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.sustained_ramp({"kafkastore_append_inproc": {}}, tmp_path / "none.png") is None


# ----------------------------------------------------------------- targets, growth, tables


def test_targets_of_issue_14_are_ratios_of_measured_to_threshold() -> None:
    results: dict[str, dict[str, object]] = {
        "kafkastore_sustained": {"sustained_events_per_s": 15_000.0},
        "naive_postgres_sustained": {"sustained_events_per_s": 5_000.0},
        "kafkastore_idle": {"stack_pct_of_one_core": 2.5},
        "raw_kafka_flat_out": {"cpu_us_per_event": {"total": 25.0}},
    }
    rows = {t["target"]: t for t in targets.targets(results)}
    top = rows["sustained end-to-end events/s >= 30,000"]
    assert (top["ratio"], top["met"]) == (0.5, False)
    assert rows["sustained / naive Postgres sustained >= 3"]["met"] is True
    assert rows["idle stack % of one core <= 5"]["met"] is True
    assert rows["indexer catch-up events/s >= 50,000"]["met"] is None  # not run
    reference = rows[
        "  beside it: bare producer flat out, broker + producer CPU per message, us (~20)"
    ]
    assert (reference["measured"], reference["met"], reference["reference"]) == (25.0, None, True)
    text = "\n".join(sections.targets_table(list(rows.values())))
    assert "| sustained end-to-end events/s >= 30,000 | 15,000.000 | 30,000.0 | 0.50 |" in text
    assert "| 25.000 | 20.0 | 1.25 | reference |" in text


def test_growth_divides_the_last_point_by_the_first() -> None:
    first = {
        "append_events_per_s": 20_000.0,
        "stream_read": {"p50_ms": 2.0, "p99_ms": 10.0},
        "disk": {"bytes_per_event": 1000.0},
    }
    last = {
        "append_events_per_s": 10_000.0,
        "stream_read": {"p50_ms": 3.0, "p99_ms": 12.0},
        "disk": {"bytes_per_event": 1100.0},
    }
    ratios = scale.growth([first, last])["growth_last_over_first"]
    assert ratios["append_rate"] == 0.5
    assert ratios["stream_read_p99_ms"] == 1.2
    assert ratios["bytes_per_event"] == 1.1
    assert ratios["all_page_p50_ms"] is None
    assert scale.growth([first]) == {}


def test_the_scale_out_section_says_whether_the_cores_were_the_bound() -> None:
    def phase(eps: float, stack: float, other: float) -> dict[str, object]:
        cpu = {**_cpu(10.0, api=stack * 10.0, other=other * 10.0), "cores": 2}
        cpu["cores_by_process"] = {"api": stack, "other": other}
        return {"events_per_s": eps, "cpu": cpu}

    busy = {"one_process": phase(1000, 1.9, 0.05), "two_processes": phase(1000, 1.9, 0.05)}
    assert "The 2 cores were busy in both phases" in sections.scaleout_why(busy)
    idle = {"one_process": phase(1000, 0.5, 0.0), "two_processes": phase(1800, 0.9, 0.0)}
    assert "Cores were left idle" in sections.scaleout_why(idle)
    text = "\n".join(sections.scaleout({"kafkastore_scaleout": {**idle, "gain": 1.8}}))
    assert "**1.80x**" in text


def test_compare_puts_two_runs_side_by_side_with_after_over_before(tmp_path: Path) -> None:
    before = {"run": {"started_at": "T1"}, "results": _results()}
    after_results = {k: dict(v) for k, v in _results().items()}
    after_results["kafkastore_indexer_catchup"]["events_per_s"] = 18_000.0
    after_results["kafkastore_append_inproc"]["cpu_us_per_event"] = {"total": 100.0}
    before["results"]["kafkastore_append_inproc"]["cpu_us_per_event"] = {"total": 400.0}
    step = {"offered_events_per_s": 5000.0, "append_p50_ms": 16.0, "append_p99_ms": 64.0}
    before["results"]["kafkastore_sustained"] = {"steps": [{**step, "sustained": True}]}
    after_results["kafkastore_sustained"] = {"steps": [{**step, "append_p99_ms": 101.0}]}
    after = {"run": {"started_at": "T2"}, "results": after_results}
    paths = [tmp_path / "before.json", tmp_path / "after.json"]
    for path, doc in zip(paths, (before, after), strict=True):
        path.write_bytes(orjson.dumps(doc))
    out = tmp_path / "compare.md"
    assert compare.main([str(paths[0]), str(paths[1]), "--output", str(out)]) == 0
    text = out.read_text()
    assert "run T1" in text and "run T2" in text
    catchup = next(line for line in text.splitlines() if line.startswith("| indexer catch-up"))
    assert "9,000.000 (**missed**)" in catchup and "18,000.000 (**missed**)" in catchup
    assert catchup.endswith("| 2.00 |")
    appends = next(line for line in text.splitlines() if "`kafkastore_append_inproc`" in line)
    cells = [cell.strip() for cell in appends.strip("|").split("|")]
    assert cells[0] == "`kafkastore_append_inproc`"
    assert cells[1:] == ["12,000", "12,000", "1.00", "400.0", "100.0", "0.25"]
    ramp = next(line for line in text.splitlines() if line.startswith("| 5,000 |"))
    assert ramp == "| 5,000 | 16.0 / 64.0 | 16.0 / 101 | - -> - | kept -> not kept |"
