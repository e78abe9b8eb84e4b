"""The sustained ramp as a picture (``bench/results/sustained.png``): per step, the rate offered,
acknowledged and indexed (kafkastore), the other systems' acknowledged rate, and the append p99
and index-lag p99. matplotlib (dev extra) on its headless Agg backend; no plot without it."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "sustained.png"
SYSTEMS = {
    "kafkastore_sustained": "kafkastore",
    "raw_kafka_sustained": "raw Kafka",
    "naive_postgres_sustained": "naive Postgres",
    "eventsourcing_sustained": "eventsourcing",
}


def _steps(results: Mapping[str, Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    steps = results.get(name, {}).get("steps")
    return list(steps) if isinstance(steps, list) else []


def sustained_ramp(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Write the plot to ``path``; None when no ramp ran or matplotlib is missing."""
    if not any(_steps(results, name) for name in SYSTEMS):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (rates, latency) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    top = 0.0
    for name, label in SYSTEMS.items():
        steps = _steps(results, name)
        if not steps:
            continue
        offered = [float(s["offered_events_per_s"]) for s in steps]
        top = max(top, *offered)
        rates.plot(offered, [s["acked_events_per_s"] for s in steps], "o-", label=f"{label} acked")
        p99 = [s.get("append_p99_ms") for s in steps]
        latency.plot(offered, [_ms(v) for v in p99], "o-", label=f"{label} append p99")
        if name == "kafkastore_sustained":
            indexed = [s.get("indexed_events_per_s") for s in steps]
            rates.plot(offered, [_ms(v) for v in indexed], "s--", label="kafkastore indexed")
            lag = [_ms(s.get("index_lag_p99_ms")) for s in steps]
            latency.plot(offered, lag, "s--", label="kafkastore index lag p99")
    rates.plot([0, top], [0, top], ":", color="grey", label="offered")
    rates.set(xlabel="offered events/s", ylabel="events/s", title="Rate kept per step")
    latency.axhline(100.0, color="grey", linestyle=":", label="100 ms")
    latency.set_yscale("log")
    latency.set(xlabel="offered events/s", ylabel="ms (log)", title="Latency per step")
    for ax in (rates, latency):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _ms(value: Any) -> float:
    with contextlib.suppress(TypeError, ValueError):
        return float(value)
    return float("nan")
