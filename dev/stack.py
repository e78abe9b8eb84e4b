"""``kafkastore dev``: the whole local stack, in order, and its clean stop.

Start: Kafka and PostgreSQL (in parallel) → migrations → the events topic → the services that
exist (HTTP API, indexer) → ``.kafkastore/dev.json``. Stop, in the reverse order of dependence:
the services, then Kafka, then PostgreSQL, each waited for until its process is gone.

``--detach`` returns once everything is ready; ``kafkastore dev stop`` (another process) reads
``dev.json`` to find what to stop. In the foreground, Ctrl-C or SIGTERM stops everything. All
children run in their own session, so a Ctrl-C in the terminal reaches this process alone and the
stop order is ours, not the kernel's.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dev import kafka, postgres, services
from dev.process import (
    LOCALHOST,
    StackError,
    choose_port,
    pid_alive,
    pid_cmdline,
    state_dir,
    tail,
    terminate,
)
from kafkastore.config import Settings, environ_get
from kafkastore.errors import KafkaStoreError

console = Console(stderr=True)

DEFAULT_KAFKA_PORT = 9092
DEFAULT_PG_PORT = 5432
DEFAULT_API_PORT = 8080
READY_TIMEOUT = 90.0


@dataclass(slots=True)
class Stack:
    """What one ``kafkastore dev`` started, in the order it must be stopped."""

    home: Path
    broker: kafka.KafkaBroker | None = None
    broker_proc: subprocess.Popen[bytes] | None = None
    cluster: postgres.PostgresCluster | None = None
    services: list[services.Service] = field(default_factory=list)
    settings: Settings | None = None
    api_url: str | None = None

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def manifest(self) -> Path:
        return self.home / "dev.json"

    def describe(self) -> dict[str, Any]:
        """The content of ``dev.json`` (API.md's keys, plus what ``dev stop`` needs)."""
        assert self.broker and self.cluster and self.settings
        pids: dict[str, int] = {"kafka": self.broker.pid, "postgres": self.cluster.pid}
        pids.update({s.name: s.pid for s in self.services})
        doc: dict[str, Any] = {
            "kafka": self.broker.bootstrap,
            "database_url": self.cluster.database_url,
        }
        if self.api_url:
            doc["api"] = self.api_url
        doc |= {
            "topic": self.settings.topic,
            "pids": pids,
            "postgres": {
                "data_dir": str(self.cluster.data_dir),
                "bindir": str(self.cluster.bindir),
            },
            "logs": str(self.logs),
        }
        return doc

    def stop(self) -> None:
        """Services first (they hold connections to both), then Kafka, then PostgreSQL."""
        errors: list[str] = []
        for service in reversed(self.services):
            _attempt(errors, terminate, service.pid, proc=service.proc, timeout=20.0)
        self.services.clear()
        if self.broker is not None:
            broker = self.broker
            _attempt(errors, kafka.stop, broker.pid, proc=self.broker_proc)
            self.broker = None
        if self.cluster is not None:
            cluster = self.cluster
            _attempt(errors, postgres.stop, cluster)
            self.cluster = None
        if errors:
            raise StackError("; ".join(errors))


def _attempt(errors: list[str], action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    # Stop the rest even when one stop fails: leaving processes behind is the worse outcome.
    try:
        action(*args, **kwargs)
    except KafkaStoreError as exc:
        errors.append(exc.message)


def dev_home() -> Path:
    """Where the dev stack keeps data, logs and ``dev.json``: ``.kafkastore/``, or
    ``$KAFKASTORE_DEV_HOME`` (tests run a second stack beside an engineer's own)."""
    given = environ_get("KAFKASTORE_DEV_HOME")
    return Path(given) if given else state_dir()


def run(detach: bool, kafka_port: int | None, pg_port: int | None, api_port: int | None) -> int:
    """``kafkastore dev [--detach]``: start everything; in the foreground, serve until stopped."""
    return run_in(
        dev_home(), detach=detach, kafka_port=kafka_port, pg_port=pg_port, api_port=api_port
    )


def stop() -> int:
    """``kafkastore dev stop``: stop what ``dev.json`` lists and wait until it is gone."""
    return stop_in(dev_home())


def run_in(
    home: Path,
    *,
    detach: bool,
    kafka_port: int | None = None,
    pg_port: int | None = None,
    api_port: int | None = None,
    demo: bool = True,
) -> int:
    stack = Stack(home=home)
    phase = _Phase()
    previous = _trap_signals(phase)
    try:
        if _another_stack_runs(stack.manifest):
            return 1
        try:
            start(stack, kafka_port=kafka_port, pg_port=pg_port, api_port=api_port)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; stopping what was started[/]")
            _stop_reporting(stack, phase)
            return 130
        except KafkaStoreError as exc:
            _print_error(exc)
            _stop_reporting(stack, phase)
            return 1
        detached = False
        try:
            _write_manifest(stack)
            _print_endpoints(stack)
            if detach:
                detached = True
                _keep_running(stack)
                console.print("stop it with [bold]kafkastore dev stop[/] (or make stop)")
                return 0
            if demo and stack.api_url:
                _demo(stack.api_url)
            console.print("[bold]running[/]; Ctrl-C stops every process it started")
            return 1 if _serve_until_stopped(stack, phase) else 0
        except KeyboardInterrupt:
            return 0  # Ctrl-C before serving began: the same request to stop
        finally:
            if not detached:
                _stop_reporting(stack, phase)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# Popen objects of a detached stack: their processes outlive run_in() on purpose (the OS reparents
# them when this process exits). Holding the objects keeps them from being finalised while we
# still run, which would warn that a child is "still running" (an error under pytest).
_DETACHED: list[subprocess.Popen[bytes]] = []


def _keep_running(stack: Stack) -> None:
    if stack.broker_proc is not None:
        _DETACHED.append(stack.broker_proc)
    _DETACHED.extend(s.proc for s in stack.services)


def _print_error(exc: KafkaStoreError) -> None:
    console.print(f"[red]kafkastore dev: {exc.message}[/]")
    log = getattr(exc, "log", None)
    if log:
        text = f"--- {log} (last lines) ---\n{tail(log)}"
        console.print(text, markup=False, highlight=False, style="dim")


def start(
    stack: Stack,
    *,
    kafka_port: int | None,
    pg_port: int | None,
    api_port: int | None,
) -> None:
    stack.logs.mkdir(parents=True, exist_ok=True)
    kport = choose_port(kafka_port, DEFAULT_KAFKA_PORT, what="Kafka")
    pport = choose_port(pg_port, DEFAULT_PG_PORT, what="PostgreSQL")
    with _step("Kafka broker jars (Maven Central, cached)"):
        libs = kafka.resolve_jars(log_path=stack.logs / "mvn.log")
    with _step("Kafka (KRaft) and PostgreSQL"), ThreadPoolExecutor(2) as pool:
        kafka_future: Future[tuple[kafka.KafkaBroker, subprocess.Popen[bytes]]]
        kafka_future = pool.submit(
            kafka.start,
            stack.home / "kafka",
            port=kport,
            libs=libs,
            log_path=stack.logs / "kafka.log",
            timeout=READY_TIMEOUT,
        )
        pg_future = pool.submit(
            postgres.start,
            stack.home / "postgres",
            port=pport,
            log_path=stack.logs / "postgres.log",
        )
        try:
            _wait_interruptibly([kafka_future, pg_future])
        finally:
            # Even after Ctrl-C, let both starts finish (each is bounded by its own timeout) so
            # whatever came up is recorded and stopped, never left behind.
            both: list[Future[Any]] = [kafka_future, pg_future]
            wait(both)
            if kafka_future.exception() is None:
                stack.broker, stack.broker_proc = kafka_future.result()
            if pg_future.exception() is None:
                stack.cluster = pg_future.result()
        for future in (kafka_future, pg_future):
            if (error := future.exception()) is not None:
                raise error
    assert stack.broker is not None and stack.cluster is not None
    settings = Settings.from_env(
        kafka=stack.broker.bootstrap, database_url=stack.cluster.database_url
    )
    stack.settings = settings
    with _step("migrations"):
        from kafkastore import schema

        schema.migrate(settings.database_url)
    with _step(f"topic {settings.topic!r}"):
        from kafkastore import topic

        topic.ensure_topic(settings)
    env = {
        "KAFKASTORE_KAFKA": settings.kafka,
        "KAFKASTORE_DATABASE_URL": settings.database_url,
        "KAFKASTORE_TOPIC": settings.topic,
    }
    if services.available("serve"):
        aport = choose_port(api_port, DEFAULT_API_PORT, what="HTTP API")
        with _step("HTTP API (kafkastore serve)"):
            api = services.start(
                "api",
                "serve",
                ["--host", LOCALHOST, "--port", str(aport)],
                env=env,
                log_path=stack.logs / "api.log",
            )
            stack.services.append(api)
            stack.api_url = f"http://{LOCALHOST}:{aport}"
            services.wait_http_ok(f"{stack.api_url}/readyz", timeout=READY_TIMEOUT, service=api)
    if services.available("indexer"):
        with _step("indexer (kafkastore indexer)"):
            indexer = services.start(
                "indexer", "indexer", [], env=env, log_path=stack.logs / "indexer.log"
            )
            stack.services.append(indexer)
            services.wait_alive(indexer, 1.0)


def _wait_interruptibly(futures: Sequence[Future[Any]]) -> None:
    # wait() in slices: one unbounded wait would hold off Ctrl-C until both starts return.
    while not all(f.done() for f in futures):
        wait(futures, timeout=0.2)


@contextmanager
def _step(what: str) -> Iterator[None]:
    started = time.monotonic()
    with console.status(f"{what}…"):
        try:
            yield
        except BaseException:
            console.print(f"[red]✗[/] {what}")
            raise
    console.print(f"[green]✓[/] {what} [dim]({time.monotonic() - started:.1f}s)[/]")


@dataclass(slots=True)
class _Phase:
    """Where ``kafkastore dev`` is, which decides what Ctrl-C / SIGTERM mean."""

    name: str = "starting"
    stop_requested: threading.Event = field(default_factory=threading.Event)


def _trap_signals(phase: _Phase) -> dict[int, Any]:
    """SIGTERM behaves like Ctrl-C. Starting: interrupt (then stop what came up). Serving: stop.
    Stopping: ignored, so a second Ctrl-C cannot abandon processes half-way through the stop."""

    def handle(signum: int, frame: object) -> None:
        if phase.name == "stopping":
            console.print("[yellow]stopping, please wait…[/]")
            return
        phase.stop_requested.set()
        if phase.name != "serving":
            raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handle)
    return previous


def _serve_until_stopped(stack: Stack, phase: _Phase) -> bool:
    """Wait for Ctrl-C/SIGTERM; True when a process died on its own (then everything stops)."""
    phase.name = "serving"
    if phase.stop_requested.is_set():
        return False
    while not phase.stop_requested.wait(0.5):
        if stack.broker_proc is not None and stack.broker_proc.poll() is not None:
            console.print(f"[red]Kafka exited[/] — see {stack.logs / 'kafka.log'}")
            return True
        if stack.cluster is not None and not pid_alive(stack.cluster.pid):
            console.print(f"[red]PostgreSQL exited[/] — see {stack.logs / 'postgres.log'}")
            return True
        dead = [s for s in stack.services if s.proc.poll() is not None]
        for s in dead:
            console.print(f"[red]{s.name} exited with {s.proc.returncode}[/] — see {s.log_path}")
        if dead:
            return True
    return False


def _stop_reporting(stack: Stack, phase: _Phase) -> None:
    phase.name = "stopping"
    with console.status("stopping…"):
        started = time.monotonic()
        try:
            stack.stop()
        except KafkaStoreError as exc:
            console.print(f"[red]stop: {exc.message}[/]")
        with suppress(FileNotFoundError):
            stack.manifest.unlink()
    console.print(f"stopped [dim]({time.monotonic() - started:.1f}s)[/]")


def _another_stack_runs(manifest: Path) -> bool:
    """True when ``dev.json`` names live processes; a stale one (a stack that died) is removed."""
    if not manifest.is_file():
        return False
    try:
        pids = json.loads(manifest.read_text()).get("pids", {})
    except ValueError:
        pids = {}
    if any(pid_alive(int(pid)) and _is_ours(name, int(pid)) for name, pid in pids.items()):
        console.print(
            f"[red]kafkastore dev: a dev stack is already running ({manifest}); stop it with "
            "`kafkastore dev stop`[/]"
        )
        return True
    manifest.unlink()
    return False


def _write_manifest(stack: Stack) -> None:
    tmp = stack.manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stack.describe(), indent=2) + "\n")
    tmp.replace(stack.manifest)


def _print_endpoints(stack: Stack) -> None:
    doc = stack.describe()
    table = Table(title="kafkastore dev", show_header=False, title_justify="left")
    table.add_row("Kafka", doc["kafka"])
    table.add_row("PostgreSQL", doc["database_url"])
    table.add_row("topic", doc["topic"])
    if "api" in doc:
        table.add_row("HTTP API", doc["api"])
        table.add_row("OpenAPI", doc["api"] + "/docs")
    for name, pid in doc["pids"].items():
        table.add_row(f"pid {name}", str(pid))
    table.add_row("logs", doc["logs"])
    table.add_row("state", str(stack.manifest))
    console.print(table)


def _demo(api_url: str) -> None:
    """Show the store working through its public API: one append, then its read-back."""
    status, spec = services.http_json("GET", f"{api_url}/openapi.json")
    paths = spec.get("paths", {}) if status == 200 and isinstance(spec, dict) else {}
    if not any(p.startswith("/streams/{") and "post" in ops for p, ops in paths.items()):
        console.print("[dim]demo skipped: the API has no append route yet[/]")
        return
    stream = f"demo-{uuid.uuid4().hex[:8]}"
    body = {
        "expected_version": "no_stream",
        "events": [
            {"type": "DemoEventAppended", "data": {"hello": "kafkastore", "stream": stream}}
        ],
    }
    status, answer = services.http_json("POST", f"{api_url}/streams/{stream}", body)
    console.print(f"[bold]POST /streams/{stream}[/] → {status}")
    console.print_json(data=answer)
    if status not in (200, 201):
        return
    url = f"{api_url}/streams/{stream}?min_version=1&timeout_ms=5000"
    status, answer = services.http_json("GET", url)
    error = answer.get("error") if isinstance(answer, dict) else None
    if status == 405 or (status == 404 and error != "stream_not_found"):
        # The router's own answer (no such route or method), not the store's: the read side
        # (indexer) is not part of this build yet.
        console.print("[dim]read-back skipped: the API has no read route yet[/]")
        return
    console.print(f"[bold]GET /streams/{stream}?min_version=1[/] → {status}")
    console.print_json(data=answer)


def stop_in(home: Path) -> int:
    manifest = home / "dev.json"
    if not manifest.is_file():
        console.print("no dev stack is running (no .kafkastore/dev.json)")
        return 0
    doc = json.loads(manifest.read_text())
    pids: dict[str, int] = {k: int(v) for k, v in doc.get("pids", {}).items()}
    errors: list[str] = []
    started = time.monotonic()
    with console.status("stopping the dev stack…"):
        for name in [n for n in pids if n not in ("kafka", "postgres")]:
            _attempt(errors, _stop_pid, name, pids[name])
        if "kafka" in pids:
            _attempt(errors, _stop_pid, "kafka", pids["kafka"])
        if "postgres" in pids:
            pg = doc.get("postgres", {})
            _attempt(
                errors,
                postgres.stop_data_dir,
                Path(pg["data_dir"]),
                Path(pg["bindir"]),
                pid=pids["postgres"],
                log_path=home / "logs" / "postgres.log",
            )
    left = [f"{n} ({p})" for n, p in pids.items() if pid_alive(p) and _is_ours(n, p)]
    if left or errors:
        console.print(f"[red]kafkastore dev stop: {'; '.join(errors)} still running: {left}[/]")
        return 1
    manifest.unlink()
    console.print(f"stopped {', '.join(pids)} [dim]({time.monotonic() - started:.1f}s)[/]")
    return 0


_MARKERS = {"kafka": "kafka.Kafka", "postgres": "postgres"}


def _is_ours(name: str, pid: int) -> bool:
    # A pid from an old dev.json may belong to an unrelated process by now: check its command.
    return _MARKERS.get(name, "kafkastore") in pid_cmdline(pid)


def _stop_pid(name: str, pid: int) -> None:
    if pid_alive(pid) and _is_ours(name, pid):
        terminate(pid, timeout=30.0)
