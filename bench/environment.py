"""The services a benchmark run measures, and their clean-up.

Kafka and PostgreSQL: the ones given by ``--kafka`` and ``--database-url``; else those of a running
``kafkastore dev`` (``.kafkastore/dev.json``, reused when both answer); else a dev stack started
for this run (``dev.stack.run(detach=True)``) and stopped at its end.

Each run gets its own database (``bench_<run id>``, migrated, dropped at the end) and its own topic,
so no workload sees earlier data and the index tables start empty; the HTTP API and the indexer are
``kafkastore serve`` / ``kafkastore indexer`` subprocesses on that topic and database (as deployed),
with an indexer group of their own.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from psycopg import sql

from dev import services
from dev.process import LOCALHOST, free_port, state_dir, terminate
from kafkastore import kafka, pg, schema, topic
from kafkastore.config import Settings
from kafkastore.errors import ConfigurationError, KafkaStoreError
from kafkastore.manifest import FILE_NAME, Manifest, dev_home

logger = logging.getLogger("kafkastore.bench")

SERVICE_READY_TIMEOUT = 60.0


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (same server, user and options)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _port_of(address: str) -> int | None:
    with contextlib.suppress(ValueError, IndexError):
        return int(address.split(",", maxsplit=1)[0].rsplit(":", 1)[1])
    return None


@dataclass(slots=True)
class Environment:
    """Everything one run uses; :meth:`close` undoes what :func:`prepare` did."""

    run_id: str
    settings: Settings
    """Kafka, the run's database and the run's topic."""
    server_url: str
    """The PostgreSQL server's URL (its original database): where the run's database is made."""
    origin: str
    """Where Kafka and PostgreSQL came from: "flags", "dev.json" or "started"."""
    logs: Path
    kafka_pid: int | None = None
    postgres_pid: int | None = None
    api_url: str = ""
    api: services.Service | None = None
    indexer: services.Service | None = None
    extra_topics: list[str] = field(default_factory=list)
    extra_services: list[services.Service] = field(default_factory=list)
    started_stack: bool = False

    @property
    def database(self) -> str:
        return urlsplit(self.settings.database_url).path.lstrip("/")

    def service_env(self, settings: Settings | None = None, **extra: str) -> dict[str, str]:
        s = settings or self.settings
        return {
            "KAFKASTORE_KAFKA": s.kafka,
            "KAFKASTORE_DATABASE_URL": s.database_url,
            "KAFKASTORE_TOPIC": s.topic,
            # The API's readiness asks whether this group owns the run's topic (not the dev
            # stack's indexer group, which reads another topic).
            "KAFKASTORE_INDEXER_GROUP": s.indexer_group,
            **extra,
        }

    def start_indexer(
        self, settings: Settings, name: str, *, group: str | None = None
    ) -> services.Service:
        """``kafkastore indexer`` on ``settings.topic`` with a group of its own, or in ``group``
        (a second member of an indexer group shares its partitions)."""
        group = group or f"bench-{self.run_id}-{name}"
        proc = services.start(
            name,
            "indexer",
            ["--group", group],
            env=self.service_env(settings, KAFKASTORE_INDEXER_GROUP=group),
            log_path=self.logs / f"{name}.log",
        )
        services.wait_alive(proc, 1.0)
        self.extra_services.append(proc)
        return proc

    def start_api(
        self, name: str, *, workers: int = 1, **extra_env: str
    ) -> tuple[services.Service, str]:
        """Another ``kafkastore serve`` on the run's topic (``--workers``) with ``extra_env``
        (``KAFKASTORE_*`` settings), and its URL, once its ``/readyz`` answers."""
        port = free_port()
        url = f"http://{LOCALHOST}:{port}"
        proc = services.start(
            name,
            "serve",
            ["--host", LOCALHOST, "--port", str(port), "--workers", str(workers)],
            env=self.service_env(None, **extra_env),
            log_path=self.logs / f"{name}.log",
        )
        self.extra_services.append(proc)
        services.wait_http_ok(f"{url}/readyz", timeout=SERVICE_READY_TIMEOUT, service=proc)
        return proc, url

    def add_topic(self, name: str) -> None:
        """Delete ``name`` at the end of the run (each name once: a list with a name twice made
        librdkafka's background thread crash in delete_topics)."""
        if name != self.settings.topic and name not in self.extra_topics:
            self.extra_topics.append(name)

    def stop_service(self, service: services.Service) -> None:
        with contextlib.suppress(KafkaStoreError):
            terminate(service.pid, proc=service.proc, timeout=20.0)
        if service in self.extra_services:
            self.extra_services.remove(service)

    def close(self, *, keep_database: bool = False) -> None:
        for service in [*self.extra_services, self.indexer, self.api]:
            if service is not None:
                with contextlib.suppress(KafkaStoreError):
                    terminate(service.pid, proc=service.proc, timeout=20.0)
        self.extra_services.clear()
        self.api = self.indexer = None
        with contextlib.suppress(Exception):
            admin = kafka.admin(self.settings)
            futures = admin.delete_topics([self.settings.topic, *self.extra_topics])
            for future in futures.values():
                with contextlib.suppress(Exception):
                    future.result(30)
        if not keep_database:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            with (
                contextlib.suppress(KafkaStoreError),
                pg.translated(),
                pg.connect(self.server_url, autocommit=True) as conn,
            ):
                conn.execute(drop.format(sql.Identifier(self.database)))
        if self.started_stack:
            from dev import command

            command.stop()


def _dev_manifest() -> Manifest | None:
    try:
        return Manifest.load(dev_home() / FILE_NAME)
    except ConfigurationError:
        return None  # not a manifest: `kafkastore dev` replaces it


def _answers(settings: Settings) -> bool:
    try:
        kafka.check_reachable(settings, timeout=5.0)
        with pg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except KafkaStoreError:
        return False
    return True


def locate(settings: Settings, *, services_given: bool) -> tuple[Settings, str, dict[str, int]]:
    """(settings with Kafka and the server, origin, known pids) - starting a stack if needed."""
    if services_given:
        return settings, "flags", {}
    manifest = _dev_manifest()
    if manifest is not None:
        candidate = settings.replace(kafka=manifest.kafka, database_url=manifest.database_url)
        if _answers(candidate):
            return candidate, "dev.json", dict(manifest.pids)
    from dev import command

    if command.run(detach=True) != 0:
        raise KafkaStoreError("could not start the dev stack (see .kafkastore/logs)")
    manifest = _dev_manifest()
    if manifest is None:
        raise KafkaStoreError("the dev stack started but wrote no dev.json")
    return (
        settings.replace(kafka=manifest.kafka, database_url=manifest.database_url),
        "started",
        dict(manifest.pids),
    )


def prepare(settings: Settings, run_id: str, *, services_given: bool) -> Environment:
    """Locate the services, make the run's database and topic, start the API and the indexer."""
    from bench import procfs

    base, origin, pids = locate(settings, services_given=services_given)
    database = f"bench_{run_id}"
    topic_name = f"bench-{run_id}"
    run_settings = base.replace(
        database_url=with_database(base.database_url, database),
        topic=topic_name,
        indexer_group=f"bench-{run_id}-indexer",
    )
    logs = state_dir() / "bench" / run_id
    logs.mkdir(parents=True, exist_ok=True)
    env = Environment(
        run_id=run_id,
        settings=run_settings,
        server_url=base.database_url,
        origin=origin,
        logs=logs,
        started_stack=origin == "started",
    )
    env.kafka_pid = pids.get("kafka") or procfs.listening_pid(_port_of(base.kafka) or 0)
    env.postgres_pid = pids.get("postgres") or procfs.listening_pid(
        urlsplit(base.database_url).port or 5432
    )
    try:
        with pg.connect(base.database_url, autocommit=True) as conn, pg.translated():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        schema.migrate(run_settings.database_url)
        topic.ensure_topic(run_settings)
        port = free_port()
        env.api_url = f"http://{LOCALHOST}:{port}"
        env.api = services.start(
            "api",
            "serve",
            ["--host", LOCALHOST, "--port", str(port)],
            env=env.service_env(),
            log_path=logs / "api.log",
        )
        services.wait_http_ok(
            f"{env.api_url}/readyz", timeout=SERVICE_READY_TIMEOUT, service=env.api
        )
        env.indexer = services.start(
            "indexer",
            "indexer",
            ["--group", run_settings.indexer_group],
            env=env.service_env(),
            log_path=logs / "indexer.log",
        )
        services.wait_alive(env.indexer, 1.0)
    except BaseException:
        env.close()
        raise
    return env


def new_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:6]


def versions(env: Environment) -> dict[str, str]:
    """Kafka and PostgreSQL versions (PostgreSQL asks the server; Kafka: the broker's jar)."""
    out: dict[str, str] = {}
    with (
        contextlib.suppress(KafkaStoreError),
        pg.translated(),
        pg.connect(env.settings.database_url, autocommit=True) as conn,
    ):
        row = conn.execute("SHOW server_version").fetchone()
        out["postgresql_version"] = str(row[0]) if row else "?"
    kafka_version = "?"
    if env.kafka_pid:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{env.kafka_pid}/cmdline").read_bytes().decode(errors="replace")
            for part in cmdline.replace("\0", " ").replace(":", " ").split():
                if "/kafka-" in part or part.startswith("kafka-"):
                    name = part.split("/kafka-")[-1] if "/kafka-" in part else part[6:]
                    kafka_version = name.split("/")[0]
                    break
    if kafka_version == "?":
        with contextlib.suppress(Exception):
            from dev.kafka import kafka_version as pom_version

            kafka_version = pom_version() + " (dev stack's pom; broker not inspected)"
    out["kafka_version"] = kafka_version
    return out
