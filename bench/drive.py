"""Running a workload: warm-up, then a measured window, with a progress bar, CPU and peak RSS.

Closed loop: each producer has one operation in flight and starts the next when it returns (the
definition of "N concurrent producers" here). Pipelined producers run ``depth`` closed loops each,
over disjoint streams. An operation counts when it *completes* inside the measured window; its
latency is from its start to its completion.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from bench import procfs
from bench.stats import summarize

console = Console(stderr=True)
MAX_ERRORS = 200


@dataclass(frozen=True, slots=True)
class Timing:
    warmup: float
    measure: float


@dataclass(slots=True)
class Tally:
    """What the producers did in the measured window (merged from per-producer tallies)."""

    events: int = 0
    ops: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    live_events: int = 0

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"


def new_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<38}"),
        BarColumn(bar_width=30),
        TextColumn("{task.fields[status]:>26}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@dataclass(slots=True)
class Probe:
    """CPU and peak RSS over the measured window, for the processes of ``roles``."""

    roles: Mapping[str, int | None]
    rss_roles: Sequence[str]
    cpu: procfs.CpuWindow = field(init=False)
    reset_ok: bool = True

    def __post_init__(self) -> None:
        self.cpu = procfs.CpuWindow({k: v for k, v in self.roles.items() if v})

    def start(self) -> None:
        for role in self.rss_roles:
            pid = self.roles.get(role)
            if pid:
                self.reset_ok &= procfs.reset_peak(pid)
        self.cpu.start()

    def stop(self) -> dict[str, Any]:
        cpu = self.cpu.stop()
        peaks: dict[str, float] = {}
        for role in self.rss_roles:
            pid = self.roles.get(role)
            if pid:
                peak = procfs.peak_rss_mb(pid)
                if peak is not None:
                    peaks[role] = peak
        out: dict[str, Any] = {"cpu": cpu, "peak_rss_mb": peaks}
        if not self.reset_ok:
            out["peak_rss_note"] = "peak since process start (VmHWM reset refused)"
        return out


def finish(tally: Tally, timing: Timing, extra: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "events_per_s": round(tally.events / timing.measure, 1),
        "ops_per_s": round(tally.ops / timing.measure, 1),
        **summarize(tally.latencies_ms),
        "duration_s": timing.measure,
        "warmup_s": timing.warmup,
        "errors": tally.errors,
        "acknowledged_events": tally.live_events,
    }
    if tally.first_error:
        result["first_error"] = tally.first_error
    result.update(extra)
    return result


@contextmanager
def bar(progress: Progress, name: str, total: float) -> Iterator[Callable[..., None]]:
    task = progress.add_task(name, total=total, status="")
    last = ""
    if not console.is_terminal:
        # No live bar when stderr is a file or a pipe (make bench | tee): a line per workload.
        console.print(f"{name} ...")

    def update(completed: float, status: str = "") -> None:
        nonlocal last
        last = status
        progress.update(task, completed=min(completed, total), status=status)

    started = time.monotonic()
    try:
        yield update
    finally:
        progress.update(task, completed=total)
        if not console.is_terminal:
            took = time.monotonic() - started
            console.print(f"{name} done in {took:.0f} s {last}".rstrip())


def run_threads(
    progress: Progress,
    name: str,
    ops: Sequence[Callable[[], int]],
    timing: Timing,
    probe: Probe,
) -> tuple[Tally, dict[str, Any]]:
    """Closed loop: one thread per op; each call performs one operation and returns its events."""
    start = time.perf_counter()
    warm_end = start + timing.warmup
    end = warm_end + timing.measure
    tallies = [Tally() for _ in ops]
    abort = threading.Event()

    def worker(op: Callable[[], int], tally: Tally) -> None:
        perf = time.perf_counter
        lats = tally.latencies_ms
        while not abort.is_set():
            t0 = perf()
            if t0 >= end:
                return
            try:
                n = op()
            except Exception as exc:  # counted; a workload with many errors is aborted
                tally.error(exc)
                if tally.errors > MAX_ERRORS:
                    abort.set()
                continue
            t1 = perf()
            tally.live_events += n
            if warm_end <= t1 <= end:
                tally.events += n
                tally.ops += 1
                lats.append((t1 - t0) * 1000.0)

    threads = [
        threading.Thread(target=worker, args=(op, t), daemon=True, name=f"bench-{i}")
        for i, (op, t) in enumerate(zip(ops, tallies, strict=True))
    ]
    for t in threads:
        t.start()
    extra = _watch(
        progress,
        name,
        timing=timing,
        start=start,
        probe=probe,
        live=lambda: sum(t.live_events for t in tallies),
    )
    for t in threads:
        t.join(60.0)
    return _merge(tallies), extra


def _watch(
    progress: Progress,
    name: str,
    *,
    timing: Timing,
    start: float,
    probe: Probe,
    live: Callable[[], int],
) -> dict[str, Any]:
    """The main thread: progress bar, and the probe around the measured window."""
    total = timing.warmup + timing.measure
    measuring = False
    extra: dict[str, Any] = {}
    last_t, last_n = start, 0
    with bar(progress, name, total) as update:
        while True:
            now = time.perf_counter()
            elapsed = now - start
            if not measuring and elapsed >= timing.warmup:
                probe.start()
                measuring = True
            if elapsed >= total:
                extra = probe.stop()
                break
            n = live()
            rate = (n - last_n) / max(now - last_t, 1e-9)
            last_t, last_n = now, n
            phase = "measuring" if measuring else "warm-up"
            update(elapsed, f"{phase} {rate:,.0f} ev/s")
            time.sleep(min(0.25, max(total - elapsed, 0.0)))
    return extra


def _merge(tallies: Sequence[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.events += t.events
        out.ops += t.ops
        out.latencies_ms.extend(t.latencies_ms)
        out.errors += t.errors
        out.live_events += t.live_events
        out.first_error = out.first_error or t.first_error
    return out


async def run_async(
    progress: Progress,
    name: str,
    ops: Sequence[Callable[[], Awaitable[int]]],
    timing: Timing,
    probe: Probe,
) -> tuple[Tally, dict[str, Any]]:
    """Closed loop on one event loop: one task per op, each with one operation in flight."""
    start = time.perf_counter()
    warm_end = start + timing.warmup
    end = warm_end + timing.measure
    tallies = [Tally() for _ in ops]
    abort = asyncio.Event()

    async def worker(op: Callable[[], Awaitable[int]], tally: Tally) -> None:
        perf = time.perf_counter
        lats = tally.latencies_ms
        while not abort.is_set():
            t0 = perf()
            if t0 >= end:
                return
            try:
                n = await op()
            except Exception as exc:
                tally.error(exc)
                if tally.errors > MAX_ERRORS:
                    abort.set()
                await asyncio.sleep(0.01)
                continue
            t1 = perf()
            tally.live_events += n
            if warm_end <= t1 <= end:
                tally.events += n
                tally.ops += 1
                lats.append((t1 - t0) * 1000.0)

    tasks = [asyncio.create_task(worker(op, t)) for op, t in zip(ops, tallies, strict=True)]
    extra = await asyncio.to_thread(
        functools.partial(
            _watch,
            progress,
            name,
            timing=timing,
            start=start,
            probe=probe,
            live=lambda: sum(t.live_events for t in tallies),
        )
    )
    await asyncio.wait(tasks, timeout=60.0)
    return _merge(tallies), extra


async def run_open_loop(
    progress: Progress,
    name: str,
    *,
    op: Callable[[int], Awaitable[int]],
    rate: float,
    timing: Timing,
    probe: Probe,
) -> tuple[Tally, dict[str, Any]]:
    """Open loop: operation ``i`` starts at ``start + i / rate`` whatever the previous ones do.

    Latency is measured from the *scheduled* start, so a stall shows in the percentiles instead of
    silently lowering the offered rate (no coordinated omission).
    """
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    warm_end = start + timing.warmup
    end = warm_end + timing.measure
    tally = Tally()
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, scheduled: float) -> None:
        try:
            n = await op(i)
        except Exception as exc:
            tally.error(exc)
            return
        t1 = time.perf_counter()
        tally.live_events += n
        if warm_end <= scheduled and t1 <= end + 5.0:
            tally.events += n if t1 <= end else 0
            tally.ops += 1
            tally.latencies_ms.append((t1 - scheduled) * 1000.0)

    async def schedule() -> None:
        i = 0
        while True:
            scheduled = start + i / rate
            if scheduled >= end:
                return
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(one(i, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1

    scheduler = asyncio.create_task(schedule())
    extra = await asyncio.to_thread(
        functools.partial(
            _watch,
            progress,
            name,
            timing=timing,
            start=start,
            probe=probe,
            live=lambda: tally.live_events,
        )
    )
    await scheduler
    if pending:
        await asyncio.wait(pending, timeout=30.0)
    extra["offered_rate_per_s"] = rate
    return tally, extra
