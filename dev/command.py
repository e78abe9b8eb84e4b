"""``kafkastore dev``: start the local stack of :mod:`dev.stack`, serve, stop it cleanly.

``--detach`` returns once everything is ready; ``kafkastore dev stop`` (another process) reads
``dev.json`` (:class:`kafkastore.manifest.Manifest`) to find what to stop. In the foreground,
Ctrl-C or SIGTERM stops everything, in the stop order of :meth:`dev.stack.Stack.stop`.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from dev import services
from dev.process import pid_alive, tail
from dev.stack import Stack, console, running, start, stop_listed
from kafkastore.errors import ConfigurationError, KafkaStoreError
from kafkastore.manifest import FILE_NAME, Manifest, dev_home
from kafkastore.signals import stop_signals


def run(
    *,
    detach: bool,
    kafka_port: int | None = None,
    pg_port: int | None = None,
    api_port: int | None = None,
    brokers: int = 1,
    auth: bool = False,
    pg_standby: bool = False,
) -> int:
    """``kafkastore dev [--detach] [--auth] [--pg-standby]``: start everything; in the
    foreground, serve until stopped. ``--auth`` turns authentication on and prints an admin
    token once; ``--pg-standby`` adds PostgreSQL's synchronous standby."""
    return run_in(
        dev_home(),
        detach=detach,
        kafka_port=kafka_port,
        pg_port=pg_port,
        api_port=api_port,
        brokers=brokers,
        auth=auth,
        pg_standby=pg_standby,
    )


def stop() -> int:
    """``kafkastore dev stop``: stop what ``dev.json`` lists and wait until it is gone."""
    return stop_in(dev_home())


@dataclass(slots=True)
class _Phase:
    """Where ``kafkastore dev`` is, which decides what Ctrl-C / SIGTERM mean."""

    name: str = "starting"
    stop_requested: threading.Event = field(default_factory=threading.Event)

    def on_signal(self, signum: int) -> None:
        """SIGTERM behaves like Ctrl-C. Starting: interrupt (then stop what came up). Serving:
        stop. Stopping: ignored, so a second Ctrl-C cannot abandon processes half-way through
        the stop."""
        if self.name == "stopping":
            console.print("[yellow]stopping, please wait…[/]")
            return
        self.stop_requested.set()
        if self.name != "serving":
            # The start blocks in subprocesses and thread pools: interrupt it the way Python's
            # own SIGINT handler does.
            raise KeyboardInterrupt


def run_in(
    home: Path,
    *,
    detach: bool,
    kafka_port: int | None = None,
    pg_port: int | None = None,
    api_port: int | None = None,
    demo: bool = True,
    brokers: int = 1,
    auth: bool = False,
    pg_standby: bool = False,
) -> int:
    stack = Stack(home=home, auth=auth)
    phase = _Phase()
    with stop_signals(phase.on_signal):
        if _another_stack_runs(stack.manifest_path):
            return 1
        try:
            start(
                stack,
                kafka_port=kafka_port,
                pg_port=pg_port,
                api_port=api_port,
                brokers=brokers,
                standby=pg_standby,
            )
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
            manifest = stack.manifest()
            manifest.write(stack.manifest_path)
            _print_endpoints(manifest, stack.manifest_path)
            _print_auth(stack)
            if detach:
                detached = True
                _keep_running(stack)
                console.print("stop it with [bold]kafkastore dev stop[/] (or make stop)")
                return 0
            if demo and manifest.api:
                _demo(manifest.api, stack.admin_token)
            console.print("[bold]running[/]; Ctrl-C stops every process it started")
            return 1 if _serve_until_stopped(stack, phase) else 0
        except KeyboardInterrupt:
            return 0  # Ctrl-C before serving began: the same request to stop
        finally:
            if not detached:
                _stop_reporting(stack, phase)


# Popen objects of a detached stack: their processes outlive run_in() on purpose (the OS reparents
# them when this process exits). Holding the objects keeps them from being finalised while we
# still run, which would warn that a child is "still running" (an error under pytest).
_DETACHED: list[subprocess.Popen[bytes]] = []


def _keep_running(stack: Stack) -> None:
    if stack.broker_proc is not None:
        _DETACHED.append(stack.broker_proc)
    if stack.kafka_cluster is not None:
        _DETACHED.extend(n.proc for n in stack.kafka_cluster.nodes if n.proc is not None)
    _DETACHED.extend(s.proc for s in stack.services)


def _print_error(exc: KafkaStoreError) -> None:
    console.print(f"[red]kafkastore dev: {exc.message}[/]")
    log = getattr(exc, "log", None)
    if log:
        text = f"--- {log} (last lines) ---\n{tail(log)}"
        console.print(text, markup=False, highlight=False, style="dim")


def _serve_until_stopped(stack: Stack, phase: _Phase) -> bool:
    """Wait for Ctrl-C/SIGTERM; True when a process died on its own (then everything stops)."""
    phase.name = "serving"
    if phase.stop_requested.is_set():
        return False
    while not phase.stop_requested.wait(0.5):
        if stack.broker_proc is not None and stack.broker_proc.poll() is not None:
            console.print(f"[red]Kafka exited[/] — see {stack.logs / 'kafka.log'}")
            return True
        if stack.kafka_cluster is not None and not all(
            n.running for n in stack.kafka_cluster.nodes
        ):
            console.print(f"[red]a Kafka node exited[/] — see {stack.home / 'kafka-cluster'}")
            return True
        if stack.cluster is not None and not pid_alive(stack.cluster.pid):
            console.print(f"[red]PostgreSQL exited[/] — see {stack.logs / 'postgres.log'}")
            return True
        if stack.standby is not None and not pid_alive(stack.standby.pid):
            log = stack.logs / "postgres-standby.log"
            console.print(f"[red]the PostgreSQL standby exited[/] — see {log}")
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
            stack.manifest_path.unlink()
    console.print(f"stopped [dim]({time.monotonic() - started:.1f}s)[/]")


def _another_stack_runs(path: Path) -> bool:
    """True when ``dev.json`` names live processes; a stale one (a stack that died, or a file
    that is no manifest) is removed."""
    try:
        manifest = Manifest.load(path)
    except ConfigurationError:
        manifest = None
    if manifest is not None and running(manifest):
        console.print(
            f"[red]kafkastore dev: a dev stack is already running ({path}); stop it with "
            "`kafkastore dev stop`[/]"
        )
        return True
    path.unlink(missing_ok=True)
    return False


def _print_endpoints(manifest: Manifest, path: Path) -> None:
    table = Table(title="kafkastore dev", show_header=False, title_justify="left")
    table.add_row("Kafka", manifest.kafka)
    table.add_row("PostgreSQL", manifest.database_url)
    if manifest.postgres is not None and manifest.postgres_standby is not None:
        table.add_row("  primary", manifest.postgres.url or "")
        table.add_row("  synchronous standby", manifest.postgres_standby.url or "")
    table.add_row("topic", manifest.topic)
    if manifest.api:
        table.add_row("HTTP API", manifest.api)
        table.add_row("OpenAPI", manifest.api + "/docs")
        table.add_row("console", manifest.api + "/console")
    if manifest.indexer_metrics:
        table.add_row("indexer metrics", manifest.indexer_metrics)
    for name, pid in manifest.pids.items():
        table.add_row(f"pid {name}", str(pid))
    table.add_row("logs", str(manifest.logs))
    table.add_row("state", str(path))
    console.print(table)
    console.print(
        "Commands run in this checkout (kafkastore …, EventStore.connect()) use this stack "
        'while it runs; elsewhere: [bold]eval "$(kafkastore dev env)"[/]'
    )


def _print_auth(stack: Stack) -> None:
    if stack.admin_token is None:
        console.print(
            "[yellow]auth is off[/]: anyone who reaches the API may read and write every stream "
            "(`kafkastore dev --auth` turns it on)"
        )
        return
    console.print("[bold]auth is on[/]; the admin token, shown this once (keep it):")
    print(stack.admin_token, flush=True)
    console.print(
        '  e.g. export KAFKASTORE_TOKEN=<it>; curl -H "Authorization: Bearer $KAFKASTORE_TOKEN" …'
    )


def _demo(api_url: str, token: str | None = None) -> None:
    """Show the store working through its public API: one append, then its read-back."""
    stream = f"demo-{uuid.uuid4().hex[:8]}"
    body = {
        "expected_version": "no_stream",
        "events": [
            {"type": "DemoEventAppended", "data": {"hello": "kafkastore", "stream": stream}}
        ],
    }
    status, answer = services.http_json("POST", f"{api_url}/streams/{stream}", body, token=token)
    console.print(f"[bold]POST /streams/{stream}[/] → {status}")
    console.print_json(data=answer)
    if status not in (200, 201):
        return
    url = f"{api_url}/streams/{stream}?min_version=1&timeout_ms=5000"
    status, answer = services.http_json("GET", url, token=token)
    console.print(f"[bold]GET /streams/{stream}?min_version=1[/] → {status}")
    console.print_json(data=answer)


def stop_in(home: Path) -> int:
    """Stop the stack whose ``dev.json`` is in ``home``; 0 when nothing of it is left."""
    path = home / FILE_NAME
    manifest = Manifest.load(path)
    if manifest is None:
        console.print("no dev stack is running (no .kafkastore/dev.json)")
        return 0
    started = time.monotonic()
    with console.status("stopping the dev stack…"):
        errors = stop_listed(manifest, home)
    left = running(manifest)
    if left or errors:
        console.print(f"[red]kafkastore dev stop: {'; '.join(errors)} still running: {left}[/]")
        return 1
    path.unlink()
    console.print(f"stopped {', '.join(manifest.pids)} [dim]({time.monotonic() - started:.1f}s)[/]")
    return 0
