"""``.kafkastore/dev.json``: what a running ``kafkastore dev`` started, and where to reach it.

``dev.stack`` writes it once the stack is ready and removes it when the stack stops;
``kafkastore dev env``, ``kafkastore dev stop``, the next ``kafkastore dev`` (is one running
already?) and the benchmarks read it. The file holds the documented keys (``kafka``,
``database_url``, ``api``, ``topic``), the indexer's metrics URL (``indexer_metrics``), plus what
a stop from another process needs (``pids``, ``postgres``, ``logs``). It is a kernel module so
the CLI can read it without importing ``dev/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafkastore.config import ENV_PREFIX, environ_get
from kafkastore.errors import ConfigurationError

__all__ = [
    "FILE_NAME",
    "Manifest",
    "PostgresFiles",
    "dev_home",
    "is_stack_process",
    "pid_alive",
    "pid_cmdline",
    "state_dir",
]

FILE_NAME = "dev.json"


def _project_root() -> Path:
    """The checkout the packages live in, or the working directory for an installed package."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def state_dir() -> Path:
    """``.kafkastore/``: caches, data directories, logs and ``dev.json``."""
    return _project_root() / ".kafkastore"


def dev_home() -> Path:
    """Where the dev stack keeps data, logs and ``dev.json``: ``.kafkastore/``, or
    ``$KAFKASTORE_DEV_HOME`` (tests run a second stack beside an engineer's own)."""
    given = environ_get("KAFKASTORE_DEV_HOME")
    return Path(given) if given else state_dir()


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresFiles:
    """The dev stack's PostgreSQL cluster on disk (``dev stop`` runs its ``pg_ctl stop``)."""

    data_dir: Path
    """The cluster's data directory."""
    bindir: Path
    """The server binaries that created it (``initdb``, ``pg_ctl``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The content of ``dev.json``."""

    kafka: str
    """Kafka bootstrap servers."""
    database_url: str
    """The PostgreSQL URL of the store's database."""
    topic: str
    """The events topic."""
    api: str | None = None
    """Base URL of the HTTP API, when the stack runs one."""
    indexer_metrics: str | None = None
    """URL of the indexer's Prometheus endpoint (``…/metrics``), when it serves one."""
    pids: Mapping[str, int] = field(default_factory=dict)
    """Process ids by name (``kafka``, ``postgres``, ``api``, ``indexer``), in start order."""
    postgres: PostgresFiles | None = None
    """The PostgreSQL cluster's directories."""
    logs: Path | None = None
    """The directory of the services' logs."""
    kafka_logins: Path | None = None
    """With ``dev --auth``: a file (mode 0600) of the librdkafka settings that log in as the
    broker's consumer (``extra_kafka``) and writer (``writer_kafka``) principals, so commands
    in the checkout reach the secured broker (:mod:`kafkastore.target`)."""

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """The manifest at ``path``; None when there is none. A file that is not one (not
        JSON, keys missing or of the wrong type) raises :class:`ConfigurationError`."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return cls.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"{path} is not a dev stack manifest: {exc!r}") from None

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict):
            raise TypeError(f"expected an object, got {type(doc).__name__}")
        postgres = doc.get("postgres")
        logs = doc.get("logs")
        logins = doc.get("kafka_logins")
        return cls(
            kafka=_text(doc["kafka"]),
            database_url=_text(doc["database_url"]),
            topic=_text(doc["topic"]),
            api=_text(doc["api"]) if doc.get("api") else None,
            indexer_metrics=_text(doc["indexer_metrics"]) if doc.get("indexer_metrics") else None,
            pids={_text(name): int(pid) for name, pid in dict(doc.get("pids", {})).items()},
            postgres=PostgresFiles(
                data_dir=Path(_text(postgres["data_dir"])), bindir=Path(_text(postgres["bindir"]))
            )
            if postgres
            else None,
            logs=Path(_text(logs)) if logs else None,
            kafka_logins=Path(_text(logins)) if logins else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON document (keys in the documented order; absent ones left out)."""
        doc: dict[str, Any] = {"kafka": self.kafka, "database_url": self.database_url}
        if self.api:
            doc["api"] = self.api
        if self.indexer_metrics:
            doc["indexer_metrics"] = self.indexer_metrics
        doc |= {"topic": self.topic, "pids": dict(self.pids)}
        if self.postgres is not None:
            doc["postgres"] = {
                "data_dir": str(self.postgres.data_dir),
                "bindir": str(self.postgres.bindir),
            }
        if self.logs is not None:
            doc["logs"] = str(self.logs)
        if self.kafka_logins is not None:
            doc["kafka_logins"] = str(self.kafka_logins)
        return doc

    def kafka_settings(self) -> dict[str, dict[str, str]]:
        """``extra_kafka`` and ``writer_kafka`` from :attr:`kafka_logins` (empty without)."""
        if self.kafka_logins is None:
            return {}
        try:
            doc = json.loads(self.kafka_logins.read_text())
            return {
                name: {_text(k): _text(v) for k, v in dict(doc[name]).items()}
                for name in ("extra_kafka", "writer_kafka")
            }
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(
                f"{self.kafka_logins} holds no Kafka logins of the dev stack: {exc!r}"
            ) from None

    def write(self, path: Path) -> None:
        """Write ``path`` atomically: a reader sees the old file, or the whole new one."""
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)

    def running(self) -> list[str]:
        """``name (pid)`` of the processes this manifest lists that still run (and are still
        ours: a pid from an old file may belong to an unrelated process by now)."""
        return [
            f"{name} ({pid})"
            for name, pid in self.pids.items()
            if pid_alive(pid) and is_stack_process(name, pid)
        ]

    def alive(self) -> bool:
        """Every process of the stack runs: commands may talk to it."""
        return bool(self.pids) and len(self.running()) == len(self.pids)

    def exports(self) -> dict[str, str]:
        """The ``KAFKASTORE_*`` variables that point a client at this stack."""
        values = {
            "KAFKA": self.kafka,
            "DATABASE_URL": self.database_url,
            "TOPIC": self.topic,
            "API_URL": self.api,
        }
        return {ENV_PREFIX + name: value for name, value in values.items() if value}


# What the command line of each of the stack's processes contains.
_MARKERS = {"kafka": "kafka.Kafka", "postgres": "postgres"}


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not reaped by a parent we don't own) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def is_stack_process(name: str, pid: int) -> bool:
    """Whether ``pid`` runs the command of the stack's process ``name`` (Kafka, PostgreSQL, or
    a kafkastore service)."""
    return _MARKERS.get(name.partition("-")[0], "kafkastore") in pid_cmdline(pid)


def pid_cmdline(pid: int) -> str:
    """The command line of ``pid``; empty when unknown."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value
