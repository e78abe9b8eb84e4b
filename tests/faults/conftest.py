"""Fixtures of the replicated topology.

- ``kafka_cluster`` (three KRaft nodes, see :mod:`dev.kafka_cluster`) and ``replicated_settings``
  (a topic at RF=3, min.insync.replicas=2), one cluster per test;
- ``pg_standby_pair`` (session): a PostgreSQL primary with its synchronous standby
  (:mod:`dev.pg_standby`), migrated, and the multi-host URL that reaches the primary;
- ``toxiproxy_api`` (session): a toxiproxy server of the session (:mod:`dev.toxiproxy`);
- ``topology`` (session): toxiproxy in front of every server, per client role - three Kafka
  nodes advertising their proxies and a synchronous PostgreSQL pair (:mod:`verify.network`);
  ``healed_topology`` heals every link when the test ends.

A missing toxiproxy (no Go to build it) or PostgreSQL fails under ``CI=true`` and skips
elsewhere, like the session's services.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from dev import kafka_cluster as dev_cluster
from dev import pg_standby, postgres, toxiproxy
from dev.process import StackError
from kafkastore import schema, topic
from kafkastore.config import Settings, running_in_ci
from tests.support import unique
from tests.support.services import SessionServices
from verify import network


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what}: {exc}"
    if running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def kafka_cluster(session_services: SessionServices) -> Iterator[dev_cluster.KafkaCluster]:
    """Three combined KRaft nodes of this test's own (kept, with their logs, when it fails)."""
    home = session_services.workdir / unique("cluster")
    try:
        cluster = dev_cluster.start(home, nodes=3)
    except Exception as exc:
        pytest.fail(f"a three-node Kafka cluster did not start: {exc}", pytrace=False)
    yield cluster
    cluster.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def replicated_settings(
    kafka_cluster: dev_cluster.KafkaCluster, database_url: str
) -> Callable[..., Settings]:
    """``replicated_settings(**overrides)``: settings on the cluster with a topic of their own
    at RF=3 (the topic configuration then sets ``min.insync.replicas=2``)."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "kafka": kafka_cluster.bootstrap,
            "database_url": database_url,
            "topic": unique("replicated"),
            "partitions": 3,
            "replication_factor": 3,
            "indexer_group": unique("indexer"),
            **overrides,
        }
        settings = Settings.from_env({}, **values)
        topic.ensure_topic(settings, partitions=settings.partitions)
        return settings

    return make


@dataclass(frozen=True, slots=True)
class PgPair:
    """A primary and its synchronous standby; ``database_url`` names both (the primary wins)."""

    primary: postgres.PostgresCluster
    standby: postgres.PostgresCluster
    database_url: str


@pytest.fixture(scope="session")
def pg_standby_pair(session_services: SessionServices) -> Iterator[PgPair]:
    """A synchronous pair of the session's own (a test that fails it over must make its own)."""
    home = session_services.workdir / "pg-pair"
    try:
        primary = postgres.start(home / "primary", log_path=home / "primary.log")
    except Exception as exc:
        _unavailable("PostgreSQL did not start", exc)
        raise
    try:
        standby = pg_standby.start_standby(primary, home / "standby", log_path=home / "standby.log")
    except Exception as exc:
        postgres.stop(primary)
        pytest.fail(f"the synchronous standby did not start: {exc}", pytrace=False)
    pair = PgPair(primary, standby, pg_standby.multi_host_url([primary, standby]))
    schema.migrate(pair.database_url)
    yield pair
    for node in (primary, standby):
        postgres.stop(node)
    for name in ("primary", "standby"):
        postgres.remove(home / name)


@pytest.fixture(scope="session")
def toxiproxy_api(session_services: SessionServices) -> Iterator[toxiproxy.Toxiproxy]:
    try:
        server = toxiproxy.start(session_services.workdir / "toxiproxy.log")
    except StackError as exc:
        _unavailable("toxiproxy is not available (make install builds it with Go)", exc)
        raise
    api = toxiproxy.Toxiproxy(server.url)
    yield api
    api.close()
    server.stop()


@pytest.fixture(scope="session")
def topology(
    request: pytest.FixtureRequest, session_services: SessionServices
) -> Iterator[network.Topology]:
    """The proxied topology of :mod:`verify.network`, once per session (its logs are kept
    when a test failed)."""
    try:
        toxiproxy.ensure_installed()
    except StackError as exc:
        _unavailable("toxiproxy is not available (make install builds it with Go)", exc)
    try:
        made = network.start(session_services.workdir / "net")
    except Exception as exc:
        pytest.fail(f"the proxied topology did not start: {exc}", pytrace=False)
    yield made
    made.close(keep=bool(request.session.testsfailed))


@pytest.fixture
def healed_topology(topology: network.Topology) -> Iterator[network.Topology]:
    """``topology``, every link healed again when the test ends (whatever it broke)."""
    topology.heal()
    yield topology
    topology.heal()
