"""Real Kafka and PostgreSQL for a test session, found in this order (docs/design.md section 10):

1. ``KAFKASTORE_TEST_KAFKA`` / ``KAFKASTORE_TEST_DATABASE_URL``: services someone already runs;
2. a Docker engine that answers ``docker info``: testcontainers (``apache/kafka``, ``postgres``);
3. otherwise the local services of ``dev/`` (Kafka jars from Maven, the distribution's
   PostgreSQL), started once per session under ``.kafkastore/test-stack/<pid>/`` on free ports.

Kafka and PostgreSQL are decided independently; local ones start in parallel. A service that
cannot start raises :class:`ServiceUnavailable` carrying its log; conftest turns that into a
failure under ``CI=true`` and a skip elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dev import kafka as dev_kafka
from dev import postgres as dev_postgres
from dev.process import free_port, pid_alive, pid_cmdline, state_dir, tail, terminate
from kafkastore.config import environ_get

KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:16"


class ServiceUnavailable(Exception):
    """A test service could not be provided; ``log`` is the tail of its log, when there is one."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass(slots=True)
class Provided:
    """An address and how to give it back."""

    address: str
    source: str
    """"env", "testcontainers" or "local"."""
    close: Callable[[], None] = lambda: None


def docker_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run([docker, "info"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass(slots=True)
class SessionServices:
    """Decides where each service comes from and starts local ones lazily, both at once."""

    workdir: Path
    _docker: bool | None = None
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2))
    _futures: dict[str, Future[Provided]] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def docker(self) -> bool:
        if self._docker is None:
            self._docker = docker_available()
        return self._docker

    def kafka(self) -> Provided:
        return self._get("kafka")

    def postgres(self) -> Provided:
        return self._get("postgres")

    def _get(self, name: str) -> Provided:
        if name not in self._futures:
            # Whichever is asked for first, start the other too when it will be local: most
            # tests need both, and the two starts overlap.
            self._submit(name)
            other = "postgres" if name == "kafka" else "kafka"
            if self._source(other) != "env":
                self._submit(other)
        try:
            return self._futures[name].result()
        except ServiceUnavailable:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"{name}: {exc}") from exc

    def _submit(self, name: str) -> None:
        if name not in self._futures:
            start = self._start_kafka if name == "kafka" else self._start_postgres
            self._futures[name] = self._pool.submit(start)

    def _source(self, name: str) -> str:
        variable = "KAFKASTORE_TEST_KAFKA" if name == "kafka" else "KAFKASTORE_TEST_DATABASE_URL"
        if environ_get(variable):
            return "env"
        return "testcontainers" if self.docker() else "local"

    def _start_kafka(self) -> Provided:
        given = environ_get("KAFKASTORE_TEST_KAFKA")
        if given:
            return Provided(given, "env")
        if self.docker():
            return self._remember(_kafka_container())
        home = self.workdir / "kafka"
        try:
            broker, proc = dev_kafka.start(home, log_path=home / "kafka.log", timeout=120.0)
        except Exception as exc:
            raise ServiceUnavailable(
                f"local Kafka did not start: {exc}", tail(home / "kafka.log")
            ) from exc
        self._record_pid("kafka", broker.pid)
        return self._remember(
            Provided(broker.bootstrap, "local", lambda: dev_kafka.stop(broker.pid, proc=proc))
        )

    def _start_postgres(self) -> Provided:
        given = environ_get("KAFKASTORE_TEST_DATABASE_URL")
        if given:
            return Provided(given, "env")
        if self.docker():
            return self._remember(_postgres_container())
        home = self.workdir / "postgres"
        try:
            cluster = dev_postgres.start(home, log_path=home / "postgres.log")
        except Exception as exc:
            raise ServiceUnavailable(
                f"local PostgreSQL did not start: {exc}", tail(home / "postgres.log")
            ) from exc
        self._record_pid("postgres", cluster.pid)

        def close() -> None:
            dev_postgres.stop(cluster)
            dev_postgres.remove(home)  # the files kept outside the workdir (as root)

        return self._remember(Provided(cluster.database_url, "local", close))

    def _remember(self, provided: Provided) -> Provided:
        self._closers.append(provided.close)
        return provided

    def _record_pid(self, name: str, pid: int) -> None:
        # So that the next session can stop what a killed one (SIGKILL, no teardown) left.
        pids = self.workdir / "pids.json"
        known: dict[str, int] = json.loads(pids.read_text()) if pids.is_file() else {}
        known[name] = pid
        pids.write_text(json.dumps(known))

    def close(self) -> None:
        """Stop Kafka before PostgreSQL (the reverse of nothing in particular, but keeps the
        same order as ``kafkastore dev stop``)."""
        for future in self._futures.values():
            with contextlib.suppress(Exception):
                future.result()
        self._pool.shutdown()
        errors = []
        for close in self._closers:
            try:
                close()
            except Exception as exc:
                errors.append(exc)
        self._closers.clear()
        if errors:
            raise errors[0]


def session_workdir() -> Path:
    """``.kafkastore/test-stack/<pid>``, after stopping and removing what dead sessions left."""
    import os

    root = state_dir() / "test-stack"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():
        if stale.name.isdigit() and not pid_alive(int(stale.name)):
            _stop_leftovers(stale)
            dev_postgres.remove(stale / "postgres")
            shutil.rmtree(stale, ignore_errors=True)
    workdir = root / str(os.getpid())
    workdir.mkdir(exist_ok=True)
    return workdir


_MARKERS = {"kafka": "kafka.Kafka", "postgres": "postgres"}


def _stop_leftovers(stale: Path) -> None:
    pids_file = stale / "pids.json"
    with contextlib.suppress(OSError, ValueError):
        for name, pid in json.loads(pids_file.read_text()).items():
            cmdline = pid_cmdline(int(pid))
            if pid_alive(int(pid)) and _MARKERS.get(name, "?") in cmdline:
                terminate(int(pid), timeout=30.0)


def _kafka_container() -> Provided:
    """The official image, single node KRaft; host port = container port so the advertised
    listener is right without a second configuration step."""
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = DockerContainer(KAFKA_IMAGE)
    env: dict[str, Any] = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    for key, value in env.items():
        container = container.with_env(key, value)
    container = container.with_bind_ports(port, port)
    container.start()
    bootstrap = f"127.0.0.1:{port}"
    try:
        dev_kafka.wait_ready(bootstrap, timeout=120.0)
    except Exception as exc:
        logs = container.get_logs()
        container.stop()
        raise ServiceUnavailable(f"Kafka container not ready: {exc}", str(logs)) from exc
    return Provided(bootstrap, "testcontainers", container.stop)


def _postgres_container() -> Provided:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="postgres", dbname="kafkastore", driver=None
    )
    container.start()
    return Provided(container.get_connection_url(), "testcontainers", container.stop)
