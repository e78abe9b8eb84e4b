"""The topology a verification run faults: three Kafka nodes, a PostgreSQL cluster of its own,
and the services as the processes users deploy, each with default settings.

``start(home)`` brings up, under ``home``: a three-node KRaft cluster (:mod:`dev.kafka_cluster`,
the topic at RF=3, ``min.insync.replicas=2``), a PostgreSQL cluster (:mod:`dev.postgres`; its
own, because one fault crashes it), the run's topic and migrated database, then ``kafkastore
indexer``, ``kafkastore serve`` and one exactly-once projection (:mod:`verify.consumer`) as
subprocesses. Faults kill, pause and restart them through :class:`Environment`;
:meth:`Environment.close` stops everything and deletes ``home`` unless told to keep it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql as psql

from dev import kafka_cluster, postgres, services
from dev.process import LOCALHOST, free_port, spawn_logged, terminate
from kafkastore import kafka, pg, schema, topic
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError

logger = logging.getLogger("kafkastore.verify")

READY_TIMEOUT = 90.0
PARTITIONS = 3
CONSUMER_GROUP = "verify-projection"
"""The prefix of the projection's group; each run's group is ``<prefix>-<run>``: the clusters
outlive runs, and a static member of an earlier run's group (same slot, same
``group.instance.id``) would otherwise hold its partitions."""


@dataclass(slots=True)
class Service:
    """One service process (it may be down: killed by a fault, not yet restarted)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = spawn_logged(self.argv, env=self.env, log_path=self.log_path)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL (no clean shutdown: a crash, an OOM kill)."""
        if self.proc is not None and self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.running:
            with contextlib.suppress(KafkaStoreError):
                terminate(self.proc.pid, proc=self.proc, timeout=20.0)


@dataclass(slots=True)
class Environment:
    """What :func:`start` brought up."""

    home: Path
    cluster: kafka_cluster.KafkaCluster
    postgres: postgres.PostgresCluster
    settings: Settings
    api_url: str
    logs: Path
    services: dict[str, Service] = field(default_factory=dict)
    consumer_group: str = CONSUMER_GROUP
    """The run's projection group (:func:`new_run` gives each run its own)."""

    def service_env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        return {
            "KAFKASTORE_KAFKA": s.kafka,
            "KAFKASTORE_DATABASE_URL": s.database_url,
            "KAFKASTORE_TOPIC": s.topic,
            "KAFKASTORE_INDEXER_GROUP": s.indexer_group,
            **extra,
        }

    def add_service(self, name: str, argv: list[str], **env: str) -> Service:
        service = Service(name, argv, self.service_env(**env), self.logs / f"{name}.log")
        self.services[name] = service
        service.start()
        return service

    def add_consumer(self, name: str, **env: str) -> Service:
        """One more process of the run's exactly-once projection group (:mod:`verify.consumer`)."""
        return self.add_service(
            name, [sys.executable, "-m", "verify.consumer", "--group", self.consumer_group], **env
        )

    def close(self, *, keep: bool = False) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        self.cluster.stop()
        with contextlib.suppress(KafkaStoreError):
            postgres.stop(self.postgres)
        if not keep:
            postgres.remove(self.home / "postgres")
            shutil.rmtree(self.home, ignore_errors=True)


def start(home: Path, *, nodes: int = 3) -> Environment:
    """Bring the topology up under ``home`` (see the module docstring)."""
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    logger.info("starting %d Kafka nodes and PostgreSQL under %s", nodes, home)
    cluster = kafka_cluster.start(home / "kafka", nodes=nodes)
    try:
        server = postgres.start(home / "postgres", log_path=logs / "postgres.log")
    except BaseException:
        cluster.stop()
        raise
    env = Environment(home, cluster, server, Settings.from_env({}), "", logs)
    try:
        new_run(env)
    except BaseException:
        env.close(keep=True)
        raise
    return env


def new_run(env: Environment) -> None:
    """A fresh topic, database and indexer group on the same clusters, and the services (indexer,
    API, one projection process) started again on them: the next schedule sees no earlier data."""
    for service in reversed(list(env.services.values())):
        service.stop()
    env.services.clear()
    run = uuid.uuid4().hex[:8]
    database = f"verify_{run}"
    with pg.translated(), pg.connect(env.postgres.database_url, autocommit=True) as conn:
        conn.execute(psql.SQL("CREATE DATABASE {}").format(psql.Identifier(database)))
    env.settings = Settings.from_env(
        {},
        kafka=env.cluster.bootstrap,
        database_url=env.postgres.database_url.rsplit("/", 1)[0] + "/" + database,
        topic=f"verify-{run}",
        partitions=PARTITIONS,
        replication_factor=min(3, len(env.cluster.nodes)),
        indexer_group=f"verify-indexer-{run}",
    )
    env.consumer_group = f"{CONSUMER_GROUP}-{run}"
    port = free_port()
    env.api_url = f"http://{LOCALHOST}:{port}"
    schema.migrate(env.settings.database_url)
    topic.ensure_topic(env.settings, partitions=PARTITIONS)
    env.add_service("indexer", _cli("indexer"))
    env.add_service("api", _cli("serve", "--host", LOCALHOST, "--port", str(port)))
    services.wait_http_ok(f"{env.api_url}/readyz", timeout=READY_TIMEOUT)
    env.add_consumer("consumer")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kafkastore.cli", *args]


def partition_leader(settings: Settings, partition: int) -> int:
    """The node id that leads ``partition`` of the run's topic now."""
    with kafka.translated():
        metadata = kafka.admin(settings).list_topics(settings.topic, timeout=10.0)
    return int(metadata.topics[settings.topic].partitions[partition].leader)


def pids_of_cluster(data_dir: Path) -> list[int]:
    """The postmaster of ``data_dir`` and every process it started (its backends, walwriter...)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return []
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry.name))
    return [postmaster, *children]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
