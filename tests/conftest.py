"""Session fixtures over real Kafka and PostgreSQL (see :mod:`tests.support.services`).

- ``kafka_bootstrap``, ``database_url`` (migrated once per session): the services.
- ``settings`` / ``make_settings``: a :class:`Settings` with a topic of its own (``test-<uuid>``,
  3 partitions, deleted afterwards) and its own indexer group; the database is shared, so tests
  use unique stream ids (``unique("Order")``).
- ``api_server(settings)`` / ``indexer_server(settings)``: ``kafkastore serve`` / ``indexer``
  subprocesses for this test, stopped at its end.

New test directories need an ``__init__.py`` (see ``tests/__init__.py``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from dev.process import LOCALHOST, free_port
from kafkastore.config import Settings, running_in_ci
from tests.support import ServiceProcess, settings_environment, unique
from tests.support.services import ServiceUnavailable, SessionServices, session_workdir

TEST_PARTITIONS = 3


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, ``kill``) stops the run like Ctrl-C: pytest then tears the session
    fixtures down, so the session's Kafka and PostgreSQL stop instead of outliving it."""
    signal.signal(signal.SIGTERM, _interrupted)


def _unavailable(exc: ServiceUnavailable) -> None:
    """A missing service fails the run under CI=true (never a skip) and skips elsewhere."""
    message = f"{exc}\n{exc.log}" if exc.log else str(exc)
    if running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """``@pytest.mark.anyio`` tests run on asyncio only: kafkastore's async side is asyncio
    (psycopg's async pool needs its loop), even when trio is installed (selenium brings it)."""
    return "asyncio"


@pytest.fixture(scope="session")
def session_services(request: pytest.FixtureRequest) -> Iterator[SessionServices]:
    workdir = session_workdir()
    services = SessionServices(workdir=workdir)
    yield services
    services.close()
    if not request.session.testsfailed:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)  # kept after failures: it holds the logs


@pytest.fixture(scope="session")
def kafka_bootstrap(session_services: SessionServices) -> str:
    try:
        return session_services.kafka().address
    except ServiceUnavailable as exc:
        _unavailable(exc)
        raise


@pytest.fixture(scope="session")
def postgres_url(session_services: SessionServices) -> str:
    """The session's database, not migrated (most tests want ``database_url``)."""
    try:
        return session_services.postgres().address
    except ServiceUnavailable as exc:
        _unavailable(exc)
        raise


@pytest.fixture(scope="session")
def database_url(postgres_url: str) -> str:
    """The session's database with every migration applied (idempotent on a shared one)."""
    from kafkastore import schema

    schema.migrate(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def logs_dir(session_services: SessionServices) -> Path:
    path = session_services.workdir / "logs"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def make_settings(kafka_bootstrap: str, database_url: str) -> Iterator[Callable[..., Settings]]:
    """``make_settings(partitions=3, create_topic=True, **overrides)``: settings with a topic and
    an indexer group of their own. Topics are deleted when the test ends."""
    from kafkastore import topic

    topics: list[str] = []

    def make(
        *, partitions: int = TEST_PARTITIONS, create_topic: bool = True, **overrides: Any
    ) -> Settings:
        values: dict[str, Any] = {
            "kafka": kafka_bootstrap,
            "database_url": database_url,
            "topic": unique("test"),
            "partitions": partitions,
            "indexer_group": unique("indexer"),
        }
        values.update(overrides)
        # An empty environment: a developer's KAFKASTORE_* variables must not change tests.
        settings = Settings.from_env({}, **values)
        if create_topic:
            topic.ensure_topic(settings, partitions=partitions)
            topics.append(settings.topic)
        return settings

    yield make
    if topics:
        _delete_topics(kafka_bootstrap, topics)


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    # Best effort: a long session on a shared broker should not leave thousands of topics, but a
    # failed deletion must not fail the test that already passed.
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=10).values():
        with contextlib.suppress(Exception):
            future.result(timeout=15)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


class _Services:
    """The service subprocesses one test started, stopped in reverse order at its end."""

    def __init__(self, request: pytest.FixtureRequest, logs_dir: Path, subcommand: str) -> None:
        self.request, self.logs_dir, self.subcommand = request, logs_dir, subcommand
        self.started: list[ServiceProcess] = []

    def start(
        self, settings: Settings, *args: str, ready_line: str | None = None
    ) -> ServiceProcess:
        name = f"{self.request.node.name[:60]}-{self.subcommand}-{len(self.started)}"
        ready_url = None
        if self.subcommand == "serve":
            port = free_port()
            args = ("--host", LOCALHOST, "--port", str(port), *args)
            ready_url = f"http://{LOCALHOST}:{port}/readyz"
        proc = ServiceProcess(
            self.subcommand,
            *args,
            env=settings_environment(settings),
            log_path=self.logs_dir / f"{name}.log",
            ready_url=ready_url,
            ready_line=ready_line,
        )
        self.started.append(proc)
        return proc.start()

    def stop(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


@pytest.fixture
def api_server(request: pytest.FixtureRequest, logs_dir: Path) -> Iterator[Callable[..., str]]:
    """``api_server(settings, *extra_args) -> base URL`` of a ``kafkastore serve`` whose
    ``/readyz`` answered 200."""
    services = _Services(request, logs_dir, "serve")

    def base_url(settings: Settings, *args: str) -> str:
        proc = services.start(settings, *args)
        return f"http://{LOCALHOST}:{proc.argv[proc.argv.index('--port') + 1]}"

    yield base_url
    services.stop()


@pytest.fixture
def indexer_server(
    request: pytest.FixtureRequest, logs_dir: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """``indexer_server(settings, *extra_args, ready_line=None) -> ServiceProcess`` running
    ``kafkastore indexer`` with the test's settings (its own topic and group)."""
    services = _Services(request, logs_dir, "indexer")
    yield services.start
    services.stop()
