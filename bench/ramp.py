"""The sustained ramp: open-loop appends at a rising rate, step by step, and what each step kept up.

Appends of step ``k`` start at ``t_k + i / rate_k`` whatever the earlier ones do (open loop);
latency runs from that scheduled start, so a system that falls behind shows it in p99 instead of
quietly lowering the offered rate. A step's acknowledged rate counts the events whose append
completed inside the step's window; appends in flight are capped (:data:`MAX_IN_FLIGHT`): an
append that would exceed the cap is *shed* (not sent) and counts as not acknowledged.

Index lag (kafkastore only): :class:`LagTracker` polls ``index_checkpoints`` every
:data:`POLL_S` and times sampled appends from their acknowledgement to the checkpoint of their
partition passing their last offset (the indexer commits checkpoint and rows in one transaction,
so that is when the events are readable). The backlog at the start and end of a step is the
topic's messages not yet indexed (high watermarks - checkpoints, as ``Context.index_backlog``),
given as ``backlog``; without it, the acknowledged offsets the checkpoints have not passed.

A step is *sustained* (:func:`verdict`) when the acknowledged rate is >= 95% of the offered one,
append p99 < 100 ms, and the index backlog grew by at most 5% of the step's offered events (plus
:data:`BACKLOG_SLACK` for the batch in flight). The headline is the highest sustained step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import costs
from bench.drive import Probe
from bench.stats import percentile, summarize

STEPS = (2500, 5000, 7500, 10000, 12500, 15000, 20000, 25000, 30000, 35000, 40000, 50000, 60000)
"""Offered events/s of the steps (10-event appends)."""
MAX_IN_FLIGHT = 1500
POLL_S = 0.02
SAMPLES_PER_S = 50.0
BACKLOG_SLACK = 1000
ACK_RATIO = 0.95
P99_LIMIT_MS = 100.0
BACKLOG_GROWTH = 0.05
FAILED_STEPS_TO_STOP = 2

Ack = tuple[int, int] | None
"""(partition, offset of the append's last event), or None when there is no index to follow."""
AppendOp = Callable[[int], Awaitable[tuple[int, Ack]]]
"""Append number ``i``: its event count and where its last event landed."""


@dataclass(slots=True)
class _Sample:
    partition: int
    offset: int
    acked: float
    step: int


@dataclass(slots=True)
class LagTracker:
    """Polls the indexer's checkpoints on a thread of its own (one cheap query per poll)."""

    read_checkpoints: Callable[[], dict[int, int]]
    """partition -> next offset to index."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _acked_next: dict[int, int] = field(default_factory=dict)
    _pending: list[_Sample] = field(default_factory=list)
    lags_ms: dict[int, list[float]] = field(default_factory=dict)
    checkpoints: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: int = 0

    def acked(self, ack: Ack, *, sample: bool, step: int, now: float) -> None:
        if ack is None:
            return
        partition, offset = ack
        with self._lock:
            if offset + 1 > self._acked_next.get(partition, 0):
                self._acked_next[partition] = offset + 1
            if sample:
                self._pending.append(_Sample(partition, offset, now, step))

    def backlog(self) -> int:
        """Acknowledged events the indexer has not passed (as of the last poll)."""
        with self._lock:
            return backlog_of(self._acked_next, self.checkpoints)

    def indexed(self) -> int:
        with self._lock:
            return sum(self.checkpoints.values())

    def poll(self, now: float | None = None) -> None:
        """One poll: read the checkpoints and resolve the samples they passed."""
        checkpoints = self.read_checkpoints()
        now = time.perf_counter() if now is None else now
        with self._lock:
            self.checkpoints = dict(checkpoints)
            still = []
            for s in self._pending:
                if checkpoints.get(s.partition, 0) > s.offset:
                    self.lags_ms.setdefault(s.step, []).append((now - s.acked) * 1000.0)
                else:
                    still.append(s)
            self._pending = still

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception:  # a failed poll is retried; the count is reported
                    self.errors += 1
                self._stop.wait(POLL_S)

        self._thread = threading.Thread(target=run, name="bench-lag", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


def backlog_of(acked_next: Mapping[int, int], checkpoints: Mapping[int, int]) -> int:
    return sum(max(n - checkpoints.get(p, 0), 0) for p, n in acked_next.items())


def verdict(step: Mapping[str, Any]) -> dict[str, bool | None]:
    """Which conditions of a sustained step hold (None: not measured, e.g. no index)."""
    offered = float(step["offered_events_per_s"])
    acked = float(step["acked_events_per_s"])
    p99 = step.get("append_p99_ms")
    start, end = step.get("backlog_start"), step.get("backlog_end")
    growth: bool | None = None
    if isinstance(start, int) and isinstance(end, int):
        allowed = BACKLOG_GROWTH * offered * float(step["duration_s"]) + BACKLOG_SLACK
        growth = end - start <= allowed
    return {
        "rate_kept": acked >= ACK_RATIO * offered,
        "p99_under_100ms": isinstance(p99, (int, float)) and p99 < P99_LIMIT_MS,
        "backlog_not_growing": growth,
    }


def sustained(step: Mapping[str, Any]) -> bool:
    return all(v is not False for v in verdict(step).values())


def headline(steps: Sequence[Mapping[str, Any]]) -> float | None:
    """The highest offered rate of a sustained step (None: not even the first one)."""
    ok = [float(s["offered_events_per_s"]) for s in steps if sustained(s)]
    return max(ok) if ok else None


@dataclass(slots=True)
class _StepTally:
    events: int = 0
    shed: int = 0
    errors: int = 0
    first_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)


async def run(
    *,
    op: AppendOp,
    steps: Sequence[float],
    per_append: int,
    step_s: float,
    probe: Callable[[], Probe],
    tracker: LagTracker | None = None,
    update: Callable[[float, str], None] | None = None,
    warmup_s: float = 0.0,
    backlog: Callable[[], int] | None = None,
) -> list[dict[str, Any]]:
    """The ramp; one result per step run. ``warmup_s`` of the first step's rate go first, not
    recorded (connections, caches, the broker's JIT). Stops after :data:`FAILED_STEPS_TO_STOP`
    failed steps in a row, and waits (up to 30 s) for the appends still in flight at the end."""
    loop = asyncio.get_running_loop()
    in_flight = 0
    pending: set[asyncio.Task[None]] = set()
    results: list[dict[str, Any]] = []
    tallies: list[_StepTally] = []
    failed = 0
    window_end = 0.0
    current = 0

    async def one(i: int, k: int, scheduled: float, sample: bool) -> None:
        nonlocal in_flight
        tally = tallies[k]
        try:
            n, ack = await op(i)
        except Exception as exc:
            tally.errors += 1
            tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
            return
        finally:
            in_flight -= 1
        now = time.perf_counter()
        tally.latencies_ms.append((now - scheduled) * 1000.0)
        if now <= window_end:  # counted in the step that is running when it completes
            tallies[current].events += n
        if tracker is not None:
            tracker.acked(ack, sample=sample, step=k, now=now)

    i = 0
    done_s = 0.0
    plan = [(float(steps[0]), warmup_s, True)] if warmup_s > 0 and steps else []
    plan += [(float(offered), step_s, False) for offered in steps]
    for k, (offered, length, warming) in enumerate(plan):
        tallies.append(_StepTally())
        current = k
        rate = offered / per_append
        every = max(1, round(rate / SAMPLES_PER_S))
        p = probe()
        start = time.perf_counter()
        window_end = start + length
        backlog_start = await _backlog(tracker, backlog)
        indexed_start = tracker.indexed() if tracker is not None else None
        p.start()
        j = 0
        while True:
            scheduled = start + j / rate
            if scheduled >= window_end:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:
                tallies[k].shed += 1
            else:
                in_flight += 1
                task = loop.create_task(one(i, k, scheduled, j % every == 0))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            j += 1
            if update is not None and j % 200 == 0:
                phase = "warm-up at" if warming else "offered"
                update(done_s + (time.perf_counter() - start), f"{phase} {offered:,.0f} ev/s")
        delay = window_end - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        extra = p.stop()
        done_s += length
        tally = tallies[k]
        step: dict[str, Any] = {
            "offered_events_per_s": offered,
            "acked_events_per_s": round(tally.events / length, 1),
            "duration_s": length,
            "shed_appends": tally.shed,
            "errors": tally.errors,
            "in_flight_at_end": in_flight,
            **extra,
        }
        if tally.first_error:
            step["first_error"] = tally.first_error
        cost = costs.per_event_us(step.get("cpu"), step["acked_events_per_s"])
        if cost is not None:
            step["cpu_us_per_event"] = cost
        if tracker is not None and backlog_start is not None and indexed_start is not None:
            step["backlog_start"] = backlog_start
            step["backlog_end"] = await _backlog(tracker, backlog)
            step["indexed_events_per_s"] = round((tracker.indexed() - indexed_start) / length, 1)
        if warming:
            step["warmup"] = True
        results.append(step)
        if warming:
            continue
        failed = 0 if _preliminary_ok(step, tally) else failed + 1
        if failed >= FAILED_STEPS_TO_STOP:
            break
    window_end = 0.0
    if pending:
        await asyncio.wait(pending, timeout=30.0)
    if tracker is not None:  # the last samples: give the index a moment to pass them
        deadline = time.perf_counter() + 10.0
        while tracker.pending() and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
    for k, (step, tally) in enumerate(zip(results, tallies, strict=False)):
        step.update(_latencies(tally.latencies_ms))
        if tracker is not None:
            lags = sorted(tracker.lags_ms.get(k, []))
            step["index_lag_p50_ms"] = _round(percentile(lags, 50))
            step["index_lag_p99_ms"] = _round(percentile(lags, 99))
            step["index_lag_samples"] = len(lags)
        step["verdict"] = verdict(step)
        step["sustained"] = sustained(step)
    return [s for s in results if not s.get("warmup")]


async def _backlog(tracker: LagTracker | None, backlog: Callable[[], int] | None) -> int | None:
    """The index backlog now: ``backlog()`` (run on a thread: it asks the broker), else the
    tracker's acknowledged-but-not-indexed count; None without an index."""
    if tracker is None:
        return None
    if backlog is None:
        return tracker.backlog()
    return await asyncio.to_thread(backlog)


def _preliminary_ok(step: Mapping[str, Any], tally: _StepTally) -> bool:
    """Whether the ramp goes on: the step's verdict with the latencies known so far."""
    view = dict(step)
    view.update(_latencies(tally.latencies_ms))
    return sustained(view)


def _latencies(values: list[float]) -> dict[str, Any]:
    s = summarize(values)
    return {
        "append_p50_ms": s["p50_ms"],
        "append_p99_ms": s["p99_ms"],
        "append_p999_ms": s["p999_ms"],
        "appends_completed": s["samples"],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def summary(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ramp's result: the headline, the last step's CPU and the highest peak RSS."""
    best = headline(steps)
    peaks: dict[str, float] = {}
    for s in steps:
        for role, mb in (s.get("peak_rss_mb") or {}).items():
            peaks[role] = max(peaks.get(role, 0.0), float(mb))
    # The CPU and latencies shown for the ramp: its highest sustained step, else its first.
    top = next((s for s in steps if s["offered_events_per_s"] == best), steps[0] if steps else None)
    out: dict[str, Any] = {
        "events_per_s": best or 0.0,
        "sustained_events_per_s": best,
        "steps": list(steps),
        "peak_rss_mb": peaks,
        "concurrency": "open loop, rising rate, 10-event appends",
    }
    if top is not None:
        out["cpu"] = top.get("cpu")
        if "cpu_us_per_event" in top:
            out["cpu_us_per_event"] = top["cpu_us_per_event"]
        out["figures_of_step_events_per_s"] = top["offered_events_per_s"]
        for key in ("append_p50_ms", "append_p99_ms", "append_p999_ms"):
            out[key.replace("append_", "")] = top.get(key)
        for key in ("index_lag_p50_ms", "index_lag_p99_ms"):
            if key in top:
                out[key] = top[key]
    return out
