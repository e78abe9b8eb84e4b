"""CPU per event: what the measured window's CPU time of each process role costs per event.

``cpu`` is a :class:`bench.procfs.CpuWindow` result: ``cpu_s_by_process`` (seconds of CPU of each
role over the window) and ``window_s``. Per event: ``cpu_s / (events_per_s * window_s)``, in µs.
The total is the sum of the roles of the stack and its clients; ``other`` (processes outside the
benchmark, e.g. a test suite beside it) is shown but never part of the total.

Roles (``bench/README.md``): ``kafka`` the broker, ``postgresql`` the server and its backends,
``bench`` the benchmark process (load generator, and the writer when it runs in-process), ``api``
``kafkastore serve`` (the writer of the HTTP workloads) and its workers, ``indexer`` the indexer
(``indexer2``/``api2``: the second ones of the scale-out workload). ``bench.main``,
``bench.librdkafka``, ``bench.threads`` split the benchmark process by thread: its main thread
(the load generator's event loop, and the client side of in-process appends), librdkafka's
threads, and the others (the writer's threads; the producer threads of the closed-loop workloads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OUTSIDE = "other"
ROLE_LABELS = {
    "kafka": "broker",
    "postgresql": "PostgreSQL",
    "bench": "bench process",
    "api": "API",
    "indexer": "indexer",
    "api2": "API 2",
    "indexer2": "indexer 2",
    "other": "outside",
}


def cpu_seconds(cpu: Mapping[str, Any] | None) -> dict[str, float]:
    """Seconds of CPU per role; older results without ``cpu_s_by_process`` are derived from
    their cores and the window."""
    if not cpu:
        return {}
    seconds = cpu.get("cpu_s_by_process")
    if isinstance(seconds, Mapping):
        return {k: float(v) for k, v in seconds.items()}
    window = cpu.get("window_s")
    cores = cpu.get("cores_by_process")
    if isinstance(window, (int, float)) and isinstance(cores, Mapping):
        return {k: float(v) * float(window) for k, v in cores.items()}
    return {}


def per_event_us(cpu: Mapping[str, Any] | None, events_per_s: Any) -> dict[str, float] | None:
    """µs of CPU per event of each role and their ``total`` (None without events or CPU)."""
    seconds = cpu_seconds(cpu)
    window = (cpu or {}).get("window_s")
    if not seconds or not isinstance(window, (int, float)) or window <= 0:
        return None
    if not isinstance(events_per_s, (int, float)) or events_per_s <= 0:
        return None
    events = float(events_per_s) * float(window)
    out = {role: round(s / events * 1e6, 1) for role, s in seconds.items()}
    out["total"] = round(sum(s for r, s in seconds.items() if r != OUTSIDE) / events * 1e6, 1)
    groups = (cpu or {}).get("cpu_s_by_thread_group") or {}
    for role, split in groups.items():  # parts of their role: never added to the total
        for group, s in split.items():
            out[f"{role}.{group}"] = round(float(s) / events * 1e6, 1)
    return out


def stack_cores(
    cpu: Mapping[str, Any] | None, *, without: frozenset[str] = frozenset()
) -> float | None:
    """Cores used by every role but ``other`` and ``without`` over the window (1.0 = one core
    busy); the HTTP workloads leave out ``bench``, their load generator."""
    seconds = cpu_seconds(cpu)
    window = (cpu or {}).get("window_s")
    if not seconds or not isinstance(window, (int, float)) or window <= 0:
        return None
    kept = (s for r, s in seconds.items() if r != OUTSIDE and r not in without)
    return round(sum(kept) / float(window), 4)


def annotate(results: Mapping[str, dict[str, Any]]) -> None:
    """Add ``cpu_us_per_event`` to every result with a CPU window and a rate (a result that has
    one already, e.g. a ramp's from its step, keeps it)."""
    for r in results.values():
        if "cpu_us_per_event" in r:
            continue
        cost = per_event_us(r.get("cpu"), r.get("events_per_s"))
        if cost is not None:
            r["cpu_us_per_event"] = cost
