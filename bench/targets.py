"""The targets of issue 14 (each as measured / threshold) and the ratios of CPU per event between
kafkastore's workloads and the baselines of the same shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Results = Mapping[str, Mapping[str, Any]]
FLAT_OUT = "raw_kafka_flat_out"
LIGHT = ("kafkastore_idle", "kafkastore_http_100_per_s", "kafkastore_http_500_per_s")


def _total(results: Results, name: str) -> float | None:
    value = (results.get(name, {}).get("cpu_us_per_event") or {}).get("total")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def cpu_ratios(
    results: Results, pairs: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, float | None]]:
    """CPU per event of each kafkastore workload divided by its baselines' (and by the flat-out
    producer's, ``flat_out``): below 1, kafkastore spends less CPU per event."""
    out: dict[str, dict[str, float | None]] = {}
    for ours, baselines in pairs.items():
        mine = _total(results, ours)
        if mine is None:
            continue
        row: dict[str, float | None] = {}
        for key, theirs in {**baselines, "flat_out": FLAT_OUT}.items():
            other = _total(results, theirs)
            row[key] = None if other is None else round(mine / other, 2)
        out[ours] = row
    return out


def _get(results: Results, name: str, *keys: str) -> Any:
    value: Any = results.get(name, {})
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def targets(results: Results) -> list[dict[str, Any]]:
    """Each target of issue 14: measured value, threshold, ratio measured/threshold, met."""
    rows: list[dict[str, Any]] = []

    def row(
        target: str, measured: Any, threshold: float, *, at_least: bool, reference: bool = False
    ) -> None:
        """``reference``: a figure reported beside a target, judged against nothing."""
        value = float(measured) if isinstance(measured, (int, float)) else None
        met = None if value is None else (value >= threshold if at_least else value <= threshold)
        if reference:
            met = None
        ratio = None if value is None else round(value / threshold, 3)
        rows.append(
            {
                "target": target,
                "measured": value,
                "threshold": threshold,
                "ratio": ratio,
                "met": met,
                "reference": reference,
            }
        )

    top = _get(results, "kafkastore_sustained", "sustained_events_per_s")
    naive = _get(results, "naive_postgres_sustained", "sustained_events_per_s")
    es = _get(results, "eventsourcing_sustained", "sustained_events_per_s")
    row("sustained end-to-end events/s >= 30,000", top, 30_000, at_least=True)
    row("sustained / naive Postgres sustained >= 3", _div(top, naive), 3.0, at_least=True)
    row("sustained / eventsourcing sustained >= 6", _div(top, es), 6.0, at_least=True)
    stack = _get(results, "kafkastore_sustained", "cpu_us_per_event", "total")
    row(
        "whole-stack CPU per event at the highest sustained step (else the first) <= 50 us",
        stack,
        50.0,
        at_least=False,
    )
    flat = _get(results, FLAT_OUT, "cpu_us_per_event", "total")
    row(
        "  beside it: bare producer flat out, broker + producer CPU per message, us (~20)",
        flat,
        20.0,
        at_least=False,
        reference=True,
    )
    row(
        "  beside it: whole-stack CPU per event / the bare producer's",
        _div(stack, flat),
        1.0,
        at_least=False,
        reference=True,
    )
    catchup = _get(results, "kafkastore_indexer_catchup", "events_per_s")
    row("indexer catch-up events/s >= 50,000", catchup, 50_000, at_least=True)
    idle = _get(results, "kafkastore_idle", "stack_pct_of_one_core")
    row("idle stack % of one core <= 5", idle, 5.0, at_least=False)
    for name in LIGHT[1:]:
        per = _get(results, name, "stack_ms_per_event")
        row(f"{name}: stack ms of CPU per event <= 0.5", per, 0.5, at_least=False)
    lat = "kafkastore_append_latency"
    row("one-event append at 500/s p50 ms <= 4", _get(results, lat, "p50_ms"), 4.0, at_least=False)
    row(
        "one-event append at 500/s p99 ms <= 15", _get(results, lat, "p99_ms"), 15.0, at_least=False
    )
    peaks = _get(results, "kafkastore_sustained", "peak_rss_mb")
    peak = max(peaks.values()) if isinstance(peaks, Mapping) and peaks else None
    row("peak RSS of a kafkastore process under the ramp MiB <= 300", peak, 300.0, at_least=False)
    read = _get(results, "kafkastore_scale", "growth_last_over_first", "stream_read_p99_ms")
    row("read p99 at 5M events / at 0 <= 1.5 (--scale)", read, 1.5, at_least=False)
    return rows


def _div(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return round(a / b, 3)
    return None
