"""The proxied topology of the network faults: toxiproxy on every client↔server link.

``start(home)`` brings up a toxiproxy server (:mod:`dev.toxiproxy`), three KRaft nodes and a
PostgreSQL primary with its synchronous standby (:mod:`dev.pg_standby`), and in front of every
server one proxy per client *role*:

- ``writer`` - what the writer uses (the in-process store of the workload, ``kafkastore serve``);
- ``readers`` - the indexer and the subscriptions.

Each Kafka node has one client listener per role (:class:`dev.kafka.Listener`), advertised at
that role's proxy: a client that bootstraps through its proxies is told to reach every broker
through them too, so it never goes around the proxy. The nodes replicate over their own
PLAINTEXT listener, which no fault touches (a cut between the writer and Kafka is not a
partition of the Kafka cluster). PostgreSQL is reached through a multi-host URL naming both
nodes' proxies (``target_session_attrs=read-write``), so a client finds the primary again after
a failover.

:meth:`Topology.settings` gives a role's settings; :meth:`Topology.heal` removes every toxic and
re-enables every proxy; :meth:`Topology.fresh_postgres` replaces a failed-over pair by a new one
behind the same proxies. :func:`new_run` makes a :class:`verify.environment.Environment` of it
(a fresh database and topic; ``kafkastore serve`` on the writer's links, the indexer and the
exactly-once projection on the readers'), so that :func:`verify.main.run_schedule` runs the
workload and the checker over it like over the process faults' topology.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql as psql

from dev import kafka_cluster, pg_standby, postgres, services, toxiproxy
from dev.kafka import Listener
from dev.process import LOCALHOST, free_port
from kafkastore import pg, schema, topic
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError
from verify import environment
from verify.environment import Environment

logger = logging.getLogger("kafkastore.verify")

ROLES = ("writer", "readers")
PARTITIONS = 3


@dataclass(slots=True)
class Links:
    """One role's proxies: one per Kafka node (by node id), one per PostgreSQL node."""

    kafka: dict[int, toxiproxy.Proxy] = field(default_factory=dict)
    postgres: list[toxiproxy.Proxy] = field(default_factory=list)
    """The primary's proxy first, then the standby's (as when the pair was made)."""


@dataclass(slots=True)
class Topology:
    """What :func:`start` brought up."""

    home: Path
    server: toxiproxy.Server
    api: toxiproxy.Toxiproxy
    cluster: kafka_cluster.KafkaCluster
    primary: postgres.PostgresCluster
    standby: postgres.PostgresCluster
    links: dict[str, Links]
    database: str = postgres.DATABASE
    pairs: int = 1
    failed_over: bool = False
    """The standby was promoted: it is the primary now and runs without a standby."""

    def kafka_bootstrap(self, role: str) -> str:
        return ",".join(p.address for p in self.links[role].kafka.values())

    def database_url(self, role: str, database: str | None = None) -> str:
        """``role``'s multi-host URL through its proxies (both nodes, the primary wins)."""
        url = pg_standby.multi_host_url(
            [self.primary, self.standby], ports=[p.port for p in self.links[role].postgres]
        )
        return url.replace(f"dbname={self.primary.database}", f"dbname={database or self.database}")

    def direct_url(self, database: str | None = None) -> str:
        """The writable node's URL without a proxy (setup and the final reads)."""
        node = self.standby if self.failed_over else self.primary
        return (
            f"postgresql://{postgres.SUPERUSER}@{LOCALHOST}:{node.port}/{database or self.database}"
        )

    def settings(self, role: str, base: Settings) -> Settings:
        """``base`` with ``role``'s Kafka bootstrap and database URL."""
        return base.replace(
            kafka=self.kafka_bootstrap(role), database_url=self.database_url(role, self.database)
        )

    def proxies(self, role: str | None = None) -> list[toxiproxy.Proxy]:
        roles = [role] if role else list(self.links)
        return [p for r in roles for p in [*self.links[r].kafka.values(), *self.links[r].postgres]]

    def heal(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self.api.reset()

    def new_database(self) -> Settings:
        """A fresh database (migrated) and topic for a run; the settings of neither role."""
        run = uuid.uuid4().hex[:8]
        self.database = f"net_{run}"
        with pg.translated(), pg.connect(self.direct_url("postgres"), autocommit=True) as conn:
            conn.execute(psql.SQL("CREATE DATABASE {}").format(psql.Identifier(self.database)))
        settings = Settings.from_env(
            {},
            kafka=self.cluster.bootstrap,
            database_url=self.direct_url(),
            topic=f"net-{run}",
            partitions=PARTITIONS,
            replication_factor=min(3, len(self.cluster.nodes)),
            indexer_group=f"net-indexer-{run}",
        )
        schema.migrate(settings.database_url)
        topic.ensure_topic(settings, partitions=PARTITIONS)
        return settings

    def fresh_postgres(self) -> None:
        """Replace the PostgreSQL pair (after a failover) by a new primary and synchronous
        standby, behind the same proxies."""
        self._stop_postgres()
        self.pairs += 1
        self.primary, self.standby = _pair(self.home / f"pg-{self.pairs}")
        self.failed_over = False
        for links in self.links.values():
            nodes = (self.primary, self.standby)
            links.postgres = [
                proxy.set_upstream(f"{LOCALHOST}:{node.port}")
                for proxy, node in zip(links.postgres, nodes, strict=True)
            ]

    def _stop_postgres(self) -> None:
        for node in (self.primary, self.standby):
            with contextlib.suppress(KafkaStoreError):
                postgres.stop(node)
        for path in (self.home / f"pg-{self.pairs}" / n for n in ("primary", "standby")):
            postgres.remove(path)

    def close(self, *, keep: bool = False) -> None:
        self.cluster.stop()
        self._stop_postgres()
        self.api.close()
        self.server.stop()
        if not keep:
            shutil.rmtree(self.home, ignore_errors=True)


def _pair(home: Path) -> tuple[postgres.PostgresCluster, postgres.PostgresCluster]:
    primary = postgres.start(home / "primary", log_path=home / "primary.log")
    try:
        standby = pg_standby.start_standby(primary, home / "standby", log_path=home / "standby.log")
    except BaseException:
        postgres.stop(primary)
        raise
    return primary, standby


def start(home: Path, *, nodes: int = 3) -> Topology:
    """Bring the proxied topology up under ``home`` (see the module docstring)."""
    home.mkdir(parents=True, exist_ok=True)
    server = toxiproxy.start(home / "toxiproxy.log")
    api = toxiproxy.Toxiproxy(server.url)
    links = {role: Links() for role in ROLES}

    def listeners(node_id: int) -> list[Listener]:
        # The node's port for this role is bound by the broker; the proxy in front of it is the
        # address the broker advertises on that listener.
        made = []
        for role in ROLES:
            port = free_port()
            proxy = api.create(f"kafka-{node_id}-{role}", f"{LOCALHOST}:{port}")
            links[role].kafka[node_id] = proxy
            made.append(Listener(role.upper(), port, proxy.port))
        return made

    try:
        cluster = kafka_cluster.start(home / "kafka", nodes=nodes, listeners=listeners)
    except BaseException:
        server.stop()
        raise
    try:
        primary, standby = _pair(home / "pg-1")
    except BaseException:
        cluster.stop()
        server.stop()
        raise
    for role in ROLES:
        for i, node in enumerate((primary, standby)):
            which = "primary" if i == 0 else "standby"
            links[role].postgres.append(
                api.create(f"pg-{which}-{role}", f"{LOCALHOST}:{node.port}")
            )
    return Topology(home, server, api, cluster, primary, standby, links)


def new_run(topology: Topology) -> Environment:
    """A fresh database and topic on ``topology`` and its services (see the module docstring).
    The environment's ``settings`` are the writer's (the workload's in-process writers and
    final reads use them); stop it with :func:`end_run`, which leaves the topology running."""
    base = topology.new_database()
    writer = topology.settings("writer", base)
    readers = topology.settings("readers", base)
    logs = topology.home / "logs" / base.topic
    env = Environment(topology.home, topology.cluster, topology.primary, writer, "", logs)
    on_readers = {
        "KAFKASTORE_KAFKA": readers.kafka,
        "KAFKASTORE_DATABASE_URL": readers.database_url,
    }
    port = free_port()
    env.api_url = f"http://{LOCALHOST}:{port}"
    try:
        env.add_service(
            "indexer", [sys.executable, "-m", "kafkastore.cli", "indexer"], **on_readers
        )
        env.add_service(
            "api",
            [
                sys.executable,
                "-m",
                "kafkastore.cli",
                "serve",
                "--host",
                LOCALHOST,
                "--port",
                str(port),
            ],
        )
        services.wait_http_ok(f"{env.api_url}/readyz", timeout=environment.READY_TIMEOUT)
        # A group of the run's own (see environment.CONSUMER_GROUP).
        env.consumer_group = f"{environment.CONSUMER_GROUP}-{base.topic}"
        env.add_consumer("consumer", **on_readers)
    except BaseException:
        end_run(env)
        raise
    return env


def end_run(env: Environment) -> None:
    """Stop the run's services (the topology stays up for the next run)."""
    for service in reversed(list(env.services.values())):
        service.stop()
    env.services.clear()
