"""The local stack: what ``kafkastore dev`` starts, in which order, and how it is stopped.

Start: Kafka and PostgreSQL (in parallel) → migrations → the events topic → the HTTP API → the
indexer. Stop, in the reverse order of dependence: the services, then Kafka, then PostgreSQL,
each waited for until its process is gone. :mod:`dev.command` is the ``kafkastore dev`` command
around this (foreground or detached, Ctrl-C, ``dev stop``).

All children run in their own session, so a Ctrl-C in the terminal reaches ``kafkastore dev``
alone and the stop order is ours, not the kernel's.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from dev import kafka, kafka_cluster, postgres, services
from dev.process import LOCALHOST, StackError, choose_port, pid_alive, terminate
from kafkastore import authstore, schema, topic
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError
from kafkastore.manifest import FILE_NAME, Manifest, PostgresFiles, is_stack_process

console = Console(stderr=True)

DEFAULT_KAFKA_PORT = 9092
DEFAULT_PG_PORT = 5432
DEFAULT_API_PORT = 8080
DEFAULT_INDEXER_METRICS_PORT = 9464  # Prometheus' registered default for exporters
DEV_ADMIN = "admin"
READY_TIMEOUT = 90.0


@dataclass(slots=True)
class Stack:
    """What one ``kafkastore dev`` started, in the order it must be stopped."""

    home: Path
    broker: kafka.KafkaBroker | None = None
    broker_proc: subprocess.Popen[bytes] | None = None
    kafka_cluster: kafka_cluster.KafkaCluster | None = None
    """With ``--brokers 3``, in place of ``broker``."""
    cluster: postgres.PostgresCluster | None = None
    services: list[services.Service] = field(default_factory=list)
    settings: Settings | None = None
    api_url: str | None = None
    indexer_metrics_url: str | None = None
    auth: bool = False
    """Whether the services require bearer tokens (``kafkastore dev --auth``)."""
    admin_token: str | None = None
    """The admin token created by ``--auth`` (printed once, never written to a file)."""
    sasl: kafka.Sasl | None = None
    """The broker's SCRAM principals with ``--auth`` (the broker then authorises by ACLs)."""

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def manifest_path(self) -> Path:
        return self.home / FILE_NAME

    @property
    def kafka_logins_path(self) -> Path:
        """With ``--auth``: the consumer's and the writer's librdkafka logins (mode 0600)."""
        return self.home / "kafka-sasl" / "clients.json"

    def manifest(self) -> Manifest:
        """What ``dev.json`` says about this stack (the documented keys, plus what ``dev stop``
        needs)."""
        assert (self.broker or self.kafka_cluster) and self.cluster and self.settings
        pids: dict[str, int] = {}
        if self.broker is not None:
            pids["kafka"] = self.broker.pid
        for node in self.kafka_cluster.nodes if self.kafka_cluster is not None else ():
            if node.proc is not None:
                pids[f"kafka-{node.node_id}"] = node.proc.pid
        pids["postgres"] = self.cluster.pid
        pids.update({s.name: s.pid for s in self.services})
        return Manifest(
            kafka=self.broker.bootstrap if self.broker else self.settings.kafka,
            database_url=self.cluster.database_url,
            api=self.api_url,
            indexer_metrics=self.indexer_metrics_url,
            topic=self.settings.topic,
            pids=pids,
            postgres=PostgresFiles(data_dir=self.cluster.data_dir, bindir=self.cluster.bindir),
            logs=self.logs,
            kafka_logins=self.kafka_logins_path if self.sasl is not None else None,
        )

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
        if self.kafka_cluster is not None:
            try:
                self.kafka_cluster.stop()
            except KafkaStoreError as exc:
                errors.append(exc.message)
            self.kafka_cluster = None
        if self.cluster is not None:
            cluster = self.cluster
            _attempt(errors, postgres.stop, cluster)
            self.cluster = None
        if errors:
            raise StackError("; ".join(errors))


def start(
    stack: Stack,
    *,
    kafka_port: int | None,
    pg_port: int | None,
    api_port: int | None,
    brokers: int = 1,
) -> None:
    """Start everything into ``stack``, recording each process as soon as it runs (so that a
    failure or Ctrl-C half-way leaves ``stack.stop()`` able to stop what came up)."""
    stack.logs.mkdir(parents=True, exist_ok=True)
    kport = _port(kafka_port, DEFAULT_KAFKA_PORT, what="Kafka", flag="--kafka-port")
    pport = _port(pg_port, DEFAULT_PG_PORT, what="PostgreSQL", flag="--pg-port")
    with _step("Kafka broker jars (Maven Central, cached)"):
        libs = kafka.resolve_jars(log_path=stack.logs / "mvn.log")
    nodes = f"{brokers} KRaft nodes" if brokers > 1 else "KRaft"
    with _step(f"Kafka ({nodes}) and PostgreSQL"):
        _start_kafka_and_postgres(
            stack, kafka_port=kport, pg_port=pport, libs=libs, brokers=brokers
        )
    assert stack.cluster is not None
    if stack.kafka_cluster is not None:
        bootstrap, replicas = stack.kafka_cluster.bootstrap, min(3, brokers)
    else:
        assert stack.broker is not None
        bootstrap, replicas = stack.broker.bootstrap, 1
    settings = Settings.from_env(
        kafka=bootstrap, database_url=stack.cluster.database_url, replication_factor=replicas
    )
    if stack.sasl is not None:
        settings = settings.replace(extra_kafka=stack.sasl.client("admin"))
    stack.settings = settings
    with _step("migrations"):
        schema.migrate(settings.database_url)
    with _step(f"topic {settings.topic!r}"):
        topic.ensure_topic(settings)
    if stack.sasl is not None:
        with _step("Kafka ACLs: only the writer may produce"):
            kafka.grant_store_acls(settings, stack.sasl, topic=settings.topic)
    env = {
        "KAFKASTORE_KAFKA": settings.kafka,
        "KAFKASTORE_DATABASE_URL": settings.database_url,
        "KAFKASTORE_TOPIC": settings.topic,
        "KAFKASTORE_REPLICATION_FACTOR": str(settings.replication_factor),
        "KAFKASTORE_AUTH": "on" if stack.auth else "off",
    }
    if stack.sasl is not None:
        env["KAFKASTORE_EXTRA_KAFKA"] = _librdkafka(stack.sasl.client("consumer"))
        env["KAFKASTORE_WRITER_KAFKA"] = _librdkafka(stack.sasl.client("writer"))
        logins = {
            "extra_kafka": stack.sasl.client("consumer"),
            "writer_kafka": stack.sasl.client("writer"),
        }
        stack.kafka_logins_path.touch(mode=0o600)
        stack.kafka_logins_path.write_text(json.dumps(logins))
    if stack.auth:
        with _step("an admin user and token"):
            stack.admin_token = _admin_token(settings.database_url)
    aport = _port(api_port, DEFAULT_API_PORT, what="HTTP API", flag="--api-port")
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
    mport = choose_port(None, DEFAULT_INDEXER_METRICS_PORT, what="indexer metrics")
    with _step("indexer (kafkastore indexer)"):
        # The indexer counts what it indexes in its own process: it serves those metrics itself.
        indexer = services.start(
            "indexer",
            "indexer",
            [],
            env={**env, "KAFKASTORE_METRICS_PORT": str(mport)},
            log_path=stack.logs / "indexer.log",
        )
        stack.services.append(indexer)
        stack.indexer_metrics_url = f"http://{LOCALHOST}:{mport}/metrics"
        services.wait_http_ok(stack.indexer_metrics_url, timeout=READY_TIMEOUT, service=indexer)


def _port(given: int | None, preferred: int, *, what: str, flag: str) -> int:
    """:func:`choose_port`, saying so when the default port was busy and another was taken."""
    port = choose_port(given, preferred, what=what)
    if port != preferred and given is None:
        console.print(
            f"[yellow]{what}: port {preferred} is busy (another stack?); using {port}[/]"
            f" [dim](choose one with {flag})[/]"
        )
    return port


def _start_kafka_and_postgres(
    stack: Stack, *, kafka_port: int, pg_port: int, libs: Path, brokers: int = 1
) -> None:
    if brokers > 1 and stack.auth:
        raise StackError("--auth runs one secured broker; it cannot be combined with --brokers 3")
    with ThreadPoolExecutor(2) as pool:
        kafka_future: Future[Any]
        if brokers > 1:
            kafka_future = pool.submit(
                kafka_cluster.start, stack.home / "kafka-cluster", nodes=brokers, libs=libs
            )
        else:
            if stack.auth:
                stack.sasl = _dev_sasl(stack.home / "kafka-sasl")
            kafka_future = pool.submit(
                kafka.start,
                stack.home / ("kafka-sasl" if stack.auth else "kafka"),
                sasl=stack.sasl,
                port=kafka_port,
                libs=libs,
                log_path=stack.logs / "kafka.log",
                timeout=READY_TIMEOUT,
            )
        pg_future = pool.submit(
            postgres.start,
            stack.home / "postgres",
            port=pg_port,
            log_path=stack.logs / "postgres.log",
        )
        try:
            _wait_interruptibly([kafka_future, pg_future])
        finally:
            # Even after Ctrl-C, let both starts finish (each is bounded by its own timeout) so
            # whatever came up is recorded and stopped, never left behind.
            both: list[Future[Any]] = [kafka_future, pg_future]
            wait(both)
            if kafka_future.exception() is None and brokers > 1:
                stack.kafka_cluster = kafka_future.result()
            elif kafka_future.exception() is None:
                stack.broker, stack.broker_proc = kafka_future.result()
            if pg_future.exception() is None:
                stack.cluster = pg_future.result()
        for future in (kafka_future, pg_future):
            if (error := future.exception()) is not None:
                raise error


def _dev_sasl(home: Path) -> kafka.Sasl:
    """The dev broker's SCRAM passwords: made on first use, kept (mode 0600) with its storage,
    which holds the same credentials from ``kafka-storage format --add-scram``."""
    path = home / "sasl.json"
    if path.is_file():
        return kafka.Sasl(**json.loads(path.read_text()))
    home.mkdir(parents=True, exist_ok=True)
    sasl = kafka.Sasl.generate()
    path.touch(mode=0o600)
    path.write_text(json.dumps(dataclasses.asdict(sasl)))
    return sasl


def _librdkafka(config: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items())


def _admin_token(database_url: str) -> str:
    """A new token of user ``admin`` (created with role admin when missing)."""
    if not any(u.name == DEV_ADMIN for u in authstore.list_users(database_url)):
        authstore.add_user(database_url, DEV_ADMIN, ("admin",))
    return authstore.create_token(database_url, DEV_ADMIN, label="kafkastore dev --auth")[1]


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


def stop_listed(manifest: Manifest, home: Path) -> list[str]:
    """Stop what ``manifest`` lists (a stack another process started), in the stop order of
    :meth:`Stack.stop`; the errors of the stops that failed (the others still ran)."""
    pids = dict(manifest.pids)
    errors: list[str] = []
    brokers = [n for n in pids if n == "kafka" or n.startswith("kafka-")]
    for name in [n for n in pids if n not in brokers and n != "postgres"]:
        _attempt(errors, _stop_pid, name, pids[name])
    # All nodes at once: one by one, the last would wait for a quorum that is gone.
    with ThreadPoolExecutor(max(1, len(brokers))) as pool:
        for name in brokers:
            pool.submit(_attempt, errors, _stop_pid, name, pids[name])
    if "postgres" in pids:
        if manifest.postgres is None:
            _attempt(errors, _stop_pid, "postgres", pids["postgres"])
        else:
            _attempt(
                errors,
                postgres.stop_data_dir,
                manifest.postgres.data_dir,
                manifest.postgres.bindir,
                pid=pids["postgres"],
                log_path=home / "logs" / "postgres.log",
            )
    return errors


def running(manifest: Manifest) -> list[str]:
    """``name (pid)`` of the processes ``manifest`` lists that still run."""
    return manifest.running()


def _stop_pid(name: str, pid: int) -> None:
    if pid_alive(pid) and is_stack_process(name, pid):
        terminate(pid, timeout=30.0)


def _attempt(errors: list[str], action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    # Stop the rest even when one stop fails: leaving processes behind is the worse outcome.
    try:
        action(*args, **kwargs)
    except KafkaStoreError as exc:
        errors.append(exc.message)
