"""``kafkastore bench``: every workload of issue 6, in one run, on real services.

Writes ``bench/results/<timestamp>.json`` and ``bench/results/latest.md`` (and ``--output FILE``).
See ``bench/README.md`` for the definitions (closed loop vs pipelined, what is measured where).
"""

from __future__ import annotations

import faulthandler
import functools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import drive, environment, plot, procfs, report
from bench.context import Context
from bench.drive import Timing
from bench.options import BenchOptions
from bench.payload import event_size
from bench.workloads import appends, baselines, index, light, scale, scaleout, sse, sustained
from kafkastore.config import Settings

Workload = Callable[[Context, str], dict[str, Any]]


def _eventsourcing(ctx: Context, name: str, *, per_append: int) -> dict[str, Any]:
    from bench.workloads import es  # the library comes with the dev extra

    return es.eventsourcing_postgres(ctx, name, per_append=per_append)


# Run order: the idle stack first, kafkastore next (index_lag needs append_inproc's rate), the
# baselines after it, the backlog drain last (it writes the most data).
WORKLOADS: dict[str, Workload] = {
    "kafkastore_idle": light.idle,
    "kafkastore_http_100_per_s": functools.partial(light.http_trickle, rate=100.0),
    "kafkastore_http_500_per_s": functools.partial(light.http_trickle, rate=500.0),
    "kafkastore_sustained": sustained.kafkastore,
    "kafkastore_append_inproc": functools.partial(appends.inproc, per_append=10, prefix="inproc"),
    "kafkastore_append_inproc_pipelined": functools.partial(
        appends.inproc_pipelined, per_append=10, prefix="pipe"
    ),
    "kafkastore_append_inproc_single": functools.partial(
        appends.inproc, per_append=1, prefix="single"
    ),
    "kafkastore_append_http": functools.partial(appends.http, connections=8, prefix="http"),
    "kafkastore_append_http_pipelined": functools.partial(
        appends.http, connections=64, prefix="httppipe"
    ),
    "kafkastore_append_latency": appends.latency,
    # linger.ms trades single-append latency for throughput (issue 6): both sides of the default.
    "kafkastore_append_inproc_linger0": functools.partial(
        appends.inproc, per_append=10, prefix="linger0", linger_ms=0.0
    ),
    "kafkastore_append_inproc_linger5": functools.partial(
        appends.inproc, per_append=10, prefix="linger5", linger_ms=5.0
    ),
    "kafkastore_append_latency_linger0": functools.partial(appends.latency, linger_ms=0.0),
    "kafkastore_append_latency_linger5": functools.partial(appends.latency, linger_ms=5.0),
    "kafkastore_index_lag": index.index_lag,
    "kafkastore_read_stream": index.read_stream,
    "kafkastore_sse_latency": sse.latency,
    "kafkastore_sse_idle": sse.idle,
    "kafkastore_sse_idle_streams": sse.idle_streams,
    "kafkastore_scaleout": scaleout.scaleout,
    "raw_kafka_flat_out": baselines.raw_kafka_flat,
    "raw_kafka_sustained": sustained.raw_kafka,
    "raw_kafka_produce": functools.partial(baselines.raw_kafka, per_append=10),
    "raw_kafka_produce_pipelined": functools.partial(baselines.raw_kafka, per_append=10, depth=8),
    "raw_kafka_produce_single": functools.partial(baselines.raw_kafka, per_append=1),
    "naive_postgres_store": functools.partial(baselines.naive_postgres, per_append=10),
    "naive_postgres_store_batched": functools.partial(
        baselines.naive_postgres, per_append=10, batched=True
    ),
    "naive_postgres_store_single": functools.partial(baselines.naive_postgres, per_append=1),
    "eventsourcing_postgres": functools.partial(_eventsourcing, per_append=10),
    "eventsourcing_postgres_single": functools.partial(_eventsourcing, per_append=1),
    "naive_postgres_sustained": sustained.naive_postgres,
    "eventsourcing_sustained": sustained.eventsourcing,  # imports the library when it runs
    "kafkastore_indexer_catchup": index.indexer_catchup,
}

FULL = Timing(warmup=5.0, measure=30.0)
QUICK = Timing(warmup=2.0, measure=6.0)
WARM_UP_S = {True: 8.0, False: 15.0}
WARM_UP_WINDOW_S = {True: 5.0, False: 10.0}
WARM_UP_MAX_S = {True: 0.0, False: 240.0}
"""``--quick`` (minutes, not a measurement to quote) skips the wait for the JIT."""
JIT_QUIET_CORES = 0.02
"""The broker's JIT compiler threads below this (cores) over a warm-up window: warm."""
RESULTS_DIR = Path(__file__).resolve().parent / "results"


SCALE_WORKLOADS: dict[str, Workload] = {"kafkastore_scale": scale.scale}
"""``--scale``: a run of its own (it fills the store to ~5M events)."""


def selected(only: tuple[str, ...], *, scale_mode: bool = False) -> list[str]:
    known = SCALE_WORKLOADS if scale_mode else WORKLOADS
    if not only:
        return list(known)
    unknown = [name for name in only if name not in known]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(known)}")
    return [name for name in known if name in only]


def run(options: BenchOptions, settings: Settings) -> int:
    """The ``kafkastore bench`` subcommand."""
    faulthandler.enable()  # a crash in a C extension prints every thread's stack
    names = selected(options.only, scale_mode=options.scale)
    workloads = SCALE_WORKLOADS if options.scale else WORKLOADS
    quick = options.quick
    timing = QUICK if quick else FULL
    run_id = environment.new_run_id()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    machine = procfs.machine_info()
    mode = ("quick" if quick else "full") + (" scale" if options.scale else "")
    drive.console.print(f"[bold]kafkastore bench[/] run {run_id} ({mode})")
    env = environment.prepare(settings, run_id, services_given=options.services_given)
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    warmed: dict[str, Any] | None = None
    try:
        machine.update(environment.versions(env))
        progress = drive.new_progress()
        ctx = Context(env=env, timing=timing, quick=quick, progress=progress, results=results)
        with progress:
            try:
                if not options.scale:  # the growth run's first fill warms the stack up
                    warmed = warm_up(ctx)
                for name in names:
                    try:
                        results[name] = workloads[name](ctx, name)
                    except Exception as exc:  # one broken workload must not lose the others
                        failures[name] = f"{type(exc).__name__}: {exc}"
                        drive.console.print(f"[red]{name} failed: {failures[name]}[/]")
            finally:
                ctx.close()
    finally:
        env.close()
    run_info = {
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": mode,
        "warmup_s": timing.warmup,
        "stack_warm_up": warmed,
        "measure_s": timing.measure,
        "services": env.origin,
        "code": code_state(),
        "topic": env.settings.topic,
        "event_bytes": event_size(),
        "writer": {
            "linger_ms": env.settings.linger_ms,
            "batch_wait_ms": env.settings.batch_wait * 1000,
            "max_inflight_batches": env.settings.max_inflight_batches,
            "partitions": env.settings.partitions,
        },
        "load_average_at_end": [round(x, 2) for x in __import__("os").getloadavg()],
        "failures": failures,
        "notes": _notes(machine, results),
    }
    doc = report.document(machine, run_info, results)
    write(doc, options.output, results_dir=options.results_dir, scale_mode=options.scale)
    drive.console.print(report.markdown(doc), markup=False, highlight=False)
    return 1 if failures else 0


def code_state() -> dict[str, Any]:
    """The commit measured, and the files of the measured packages that differed from it (the
    checkout is shared: say what was on disk when the services started)."""
    root = RESULTS_DIR.parent.parent

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except OSError:
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "writer", "indexer", "consumers", "kafkastore")
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted": [line[3:] for line in changed.splitlines()],
    }


def warm_up(ctx: Context) -> dict[str, Any]:
    """Unrecorded load before the first workload, until the broker's JIT compiler is quiet.

    A broker started seconds ago compiles its hot paths for minutes (measured: its C1/C2
    compiler threads took 0.1-0.25 of a core through the idle and light-load windows after a
    15 s warm-up), and the first workloads would pay for it - the idle figure most of all,
    though a broker that has run for a while spends nothing there. So: pipelined appends, then
    a trickle of one-event HTTP appends in windows, until a window in which the compiler
    threads used less than :data:`JIT_QUIET_CORES` (at most :data:`WARM_UP_MAX_S` in all).
    """
    measured = ctx.timing
    started = time.monotonic()
    windows = 0
    jit = None
    ctx.timing = Timing(warmup=WARM_UP_S[ctx.quick], measure=1.0)
    try:
        appends.inproc(ctx, "warm-up (not recorded)", per_append=10, prefix="warm")
        pid = ctx.env.kafka_pid
        ctx.timing = Timing(warmup=0.0, measure=WARM_UP_WINDOW_S[ctx.quick])
        while pid is not None and time.monotonic() - started < WARM_UP_MAX_S[ctx.quick]:
            before, at = procfs.compiler_ticks(pid), time.monotonic()
            window = light.http_trickle(
                ctx, "warm-up: until the broker's JIT is quiet", rate=200.0, prefix=f"jit{windows}"
            )
            windows += 1
            jit = (procfs.compiler_ticks(pid) - before) / procfs.CLK_TCK / (time.monotonic() - at)
            if jit < JIT_QUIET_CORES and not window.get("errors"):
                break
    finally:
        ctx.timing = measured
    took = time.monotonic() - started
    drive.console.print(
        f"warm-up: {took:.0f} s, {windows} light window(s); the broker's JIT compiler at the "
        f"end: {'-' if jit is None else f'{jit:.3f}'} cores"
    )
    return {"seconds": round(took, 1), "light_windows": windows, "broker_jit_cores": jit}


def _notes(machine: dict[str, Any], results: dict[str, dict[str, Any]]) -> list[str]:
    others = [
        (r.get("cpu") or {}).get("cores_by_process", {}).get("other", 0.0) for r in results.values()
    ]
    busy = max(others, default=0.0)
    contention = (
        [
            f"Processes outside the benchmark used up to {busy:.2f} cores during a measured "
            "window (column `other`: e.g. a test suite running on the same machine); figures of "
            "those workloads are lower than on an idle machine."
        ]
        if busy >= 0.2
        else []
    )
    return [
        *contention,
        "Closed loop: each producer has one append in flight; *_pipelined: 8 per producer. "
        "Ratios compare workloads of the same shape.",
        "Every process (Kafka, PostgreSQL, writer, indexer, API, benchmark clients) shares "
        f"{machine.get('cores')} cores: figures are CPU-bound; see the CPU table.",
    ]


def write(
    doc: dict[str, Any],
    output: Path | None,
    *,
    results_dir: Path | None = None,
    scale_mode: bool = False,
) -> Path:
    """``<stamp>.json`` and ``latest.md`` (``--scale``: ``scale-<stamp>.json`` and ``scale.md``),
    and the sustained ramp's plot (:data:`bench.plot.FILE_NAME`) when the run has one."""
    where = results_dir or RESULTS_DIR
    where.mkdir(parents=True, exist_ok=True)
    stamp = doc["run"]["started_at"].replace(":", "").replace("-", "")
    prefix = "scale-" if scale_mode else ""
    path = where / f"{prefix}{stamp}.json"
    text = json.dumps(doc, indent=2) + "\n"
    path.write_text(text)
    summary = where / ("scale.md" if scale_mode else "latest.md")
    summary.write_text(report.markdown(doc) + "\n")
    if output is not None:
        output.write_text(text)
    written = [path, summary]
    picture = plot.sustained_ramp(doc["results"], where / plot.FILE_NAME)
    if picture is not None:
        written.append(picture)
    drive.console.print("results: " + ", ".join(str(p) for p in written))
    return path
