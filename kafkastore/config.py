"""Typed configuration; the only module that reads ``os.environ``.

Every setting has a ``KAFKASTORE_<NAME>`` environment variable (upper-cased field name) and a
keyword argument. Durations are float seconds. ``Settings.from_env(**overrides)`` is how every
entry point (CLI, HTTP app, tests) builds its configuration; explicit arguments win over the
environment, which wins over the defaults.

The CLI and ``EventStore.connect()`` add one layer between the environment and the defaults: the
checkout's running dev stack (``fallbacks=``, found by :mod:`kafkastore.target`). The whole order
is: flags (or arguments) > ``KAFKASTORE_*`` variables > the running dev stack > defaults.
docs/configuration.md lists every setting; its table is generated from this module.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafkastore.errors import ConfigurationError

ENV_PREFIX = "KAFKASTORE_"
_ON = frozenset({"on", "true", "1", "yes"})
_OFF = frozenset({"off", "false", "0", "no"})
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size and count limits of docs/http.md, checked before anything is produced."""

    max_event_bytes: int = 1 * MiB
    """Largest payload of one event."""
    max_request_bytes: int = 4 * MiB
    """Largest append request (all payloads and metadata of one append)."""
    max_events_per_append: int = 10_000
    """Most events in one append."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a kafkastore process needs to know. Build with :meth:`from_env`."""

    kafka: str = "127.0.0.1:9092"
    """Kafka bootstrap servers."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/kafkastore"
    """PostgreSQL connection URL (the primary: verdicts are asked of it). With separate
    database roles (``kafkastore db roles``), each process's own: the API's, the indexer's,
    a subscription's."""
    writer_database_url: str = ""
    """PostgreSQL URL of the writer (appends, metadata writes, deletes, snapshots) as its own
    least-privileged role (``kafkastore_writer``); empty: ``database_url``."""
    topic: str = "events"
    """The events topic."""
    partitions: int = 6
    """Partition count used when the topic is created (fixed for the topic's life)."""
    replication_factor: int = 1
    """Replication factor used when the topic is created (3 in production)."""
    source: str = "kafkastore://local"
    """CloudEvents ``source`` of every produced event."""

    max_event_bytes: int = 1 * MiB
    """Largest payload of one event (docs/http.md limits)."""
    max_request_bytes: int = 4 * MiB
    """Largest append request."""
    max_events_per_append: int = 10_000
    """Most events in one append."""

    # Writer. The timeout ladder of docs/design.md section 2:
    # lock_timeout < delivery_timeout < idle_in_transaction_timeout < the indexer's stuck alarm.
    compression: str = "lz4"
    """Producer ``compression.type`` (none, gzip, snappy, lz4, zstd)."""
    linger_ms: float = 1.0
    """librdkafka ``linger.ms``: trades single-append latency for throughput."""
    batch_wait: float = 0.0005
    """How long the group-commit batcher gathers concurrent appends (seconds; only while every
    other writer thread is busy: an idle one would run what arrives meanwhile at once)."""
    batch_max_appends: int = 500
    """Most appends in one group-commit transaction."""
    batch_max_events: int = 5_000
    """Most events in one group-commit transaction."""
    max_inflight_batches: int = 4
    """Transactions in flight at once, each on its own connection."""
    max_inflight_bytes: int = 64 * MiB
    """Payload bytes accepted but not yet settled; beyond it appends wait (or get 503)."""
    backpressure_timeout: float = 5.0
    """How long an in-process append waits for room before it raises Unavailable."""
    lock_timeout: float = 2.0
    """PostgreSQL ``lock_timeout`` on the writer's head locks."""
    delivery_timeout: float = 10.0
    """Kafka ``message.timeout.ms``: a batch not fully acknowledged in time is rolled back."""
    idle_in_transaction_timeout: float = 20.0
    """``idle_in_transaction_session_timeout``: PostgreSQL aborts a stuck writer."""
    statement_timeout: float = 15.0
    """``statement_timeout`` of the writer's session (above the delivery timeout)."""
    commit_resolve_timeout: float = 10.0
    """How long a writer tries to settle an append whose COMMIT reply was lost."""

    # Indexer and reads.
    indexer_group: str = "kafkastore-indexer"
    """Consumer group of the indexer."""
    indexer_batch_max: int = 5_000
    """Most messages the indexer applies in one transaction."""
    stuck_writer_alarm: float = 60.0
    """The indexer logs an alarm when a writer's xid stays in progress this long."""
    scavenge_interval: float = 30.0
    """Seconds between the indexer's background scavenger passes (0 = no background pass)."""
    scavenge_batch: int = 1_000
    """Most ``events`` rows the scavenger removes in one (short) transaction."""
    read_default_limit: int = 100
    """Page size of a read that gives no ``limit``."""
    read_max_limit: int = 10_000
    """Largest ``limit`` a read accepts."""
    read_max_wait: float = 30.0
    """Upper bound of ``timeout_ms`` on reads that wait for ``min_version``."""

    # HTTP.
    host: str = "127.0.0.1"
    """Bind address of ``kafkastore serve``."""
    port: int = 8080
    """Port of ``kafkastore serve``."""
    api_url: str = ""
    """Base URL of a running HTTP API; ``kafkastore read`` reads through it when set (empty:
    PostgreSQL directly)."""
    token: str = field(default="", repr=False)
    """Bearer token the CLI sends to the HTTP API (``read``, ``tail --api``) when auth is on;
    never logged or printed."""
    metrics_port: int = 0
    """Port of the Prometheus endpoint of ``kafkastore indexer`` and of subscriptions
    (0 = none; ``kafkastore dev`` gives its indexer one)."""
    metrics_host: str = "127.0.0.1"
    """Address those metrics endpoints bind (``0.0.0.0`` to reach them from other hosts)."""

    # Live subscriptions over HTTP (Server-Sent Events).
    sse_heartbeat: float = 10.0
    """Seconds between comment lines on an idle SSE subscription (at most 15, docs/http.md)."""
    sse_max_subscribers: int = 1000
    """SSE subscriptions one API process holds at once; beyond it 503 with Retry-After."""
    sse_send_timeout: float = 10.0
    """A subscriber that accepts no bytes for this long is disconnected (a slow client)."""
    sse_page_events: int = 50
    """Events read from the index per page; bounds a connection's memory with the
    socket's buffer."""

    dlq_handlers: Mapping[str, str] = field(default_factory=dict)
    """``group=module:function,...``: the handler the console replays a group's dead letters to."""

    extra_kafka: Mapping[str, str] = field(default_factory=dict)
    """Extra librdkafka settings for every client (e.g. security: the consumer principal's
    ``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``)."""
    writer_kafka: Mapping[str, str] = field(default_factory=dict)
    """librdkafka settings of the writer's producer only, over ``extra_kafka`` (the writer's
    SASL principal: the only one the broker lets produce to the events topic)."""

    # Security (docs/http.md "Security", README "Security").
    auth: str = "off"
    """``on``: every HTTP route but ``/healthz`` and ``auth_open_paths`` needs a bearer token."""
    auth_default_acl: str = ""
    """The global default ACL as JSON (``{"read": ["$authenticated"], ...}``); empty: read, write
    and metadata_read for every authenticated user, delete and metadata_write for ``$admin``."""
    auth_category_acls: str = ""
    """Per-category default ACLs as JSON, ``{"Order": {"write": ["alice"]}, ...}``; an action a
    category ACL does not name falls back to the global default."""
    auth_cache_ttl: float = 1.0
    """The token cache reloads at least this often (and at once on NOTIFY): a revoked token, a
    removed user or a changed role is enforced within this + 1 s even when its NOTIFY is lost."""
    auth_stream_acl_ttl: float = 1.0
    """Seconds a stream's ACL (its metadata's ``acl``) is cached per API process at most: a
    change is enforced within this even when its NOTIFY is lost (at once otherwise)."""
    auth_open_paths: str = "/readyz,/openapi.json,/docs,/docs/oauth2-redirect"
    """Comma-separated paths served without a token when auth is on (``/healthz`` always is):
    ``/healthz`` alone opens nothing more. An empty variable means this default, as for every
    setting; an empty value given in Python is refused."""
    tls_certfile: str = ""
    """PEM certificate of the HTTP API; with ``tls_keyfile`` the API serves HTTPS only."""
    tls_keyfile: str = ""
    """PEM private key of the HTTP API."""

    @property
    def limits(self) -> Limits:
        return Limits(
            max_event_bytes=self.max_event_bytes,
            max_request_bytes=self.max_request_bytes,
            max_events_per_append=self.max_events_per_append,
        )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        fallbacks: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Defaults, overlaid by ``fallbacks`` (the running dev stack's endpoints), overlaid by
        ``KAFKASTORE_*`` variables, overlaid by non-None ``overrides``.

        A fallback applies only when its variable is absent: ``KAFKASTORE_API_URL=`` (present,
        empty) means the default, on purpose, not the dev stack's value.
        """
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, value in (fallbacks or {}).items():
            if name not in hints:
                raise ConfigurationError(f"unknown setting {name!r}")
            if ENV_PREFIX + name.upper() not in env:
                values[name] = value
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, hints[f.name], raw)
        raw_extra = env.get(ENV_PREFIX + "EXTRA_KAFKA")
        if raw_extra:
            values["extra_kafka"] = _parse_mapping(raw_extra)
        for name, value in overrides.items():
            if name not in hints:
                raise ConfigurationError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def writer_url(self) -> str:
        """The database URL of the writer: ``writer_database_url``, else ``database_url``."""
        return self.writer_database_url or self.database_url

    @property
    def auth_enabled(self) -> bool:
        """Whether the HTTP API asks for credentials (``auth`` is ``on``)."""
        return self.auth.lower() in _ON

    @property
    def open_paths(self) -> frozenset[str]:
        """Paths served without credentials when auth is on."""
        return frozenset({"/healthz"} | {p.strip() for p in self.auth_open_paths.split(",") if p})

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        if self.partitions < 1:
            raise ConfigurationError("partitions must be at least 1")
        if not self.lock_timeout < self.delivery_timeout < self.idle_in_transaction_timeout:
            raise ConfigurationError(
                "timeouts must satisfy lock_timeout < delivery_timeout < "
                "idle_in_transaction_timeout (docs/design.md section 2)"
            )
        if not 0 < self.sse_heartbeat <= 15:
            raise ConfigurationError("sse_heartbeat must be above 0 and at most 15 seconds")
        if self.sse_max_subscribers < 0 or self.sse_page_events < 1 or self.sse_send_timeout <= 0:
            raise ConfigurationError(
                "sse_max_subscribers must be >= 0, sse_page_events >= 1, sse_send_timeout > 0"
            )
        if self.auth.lower() not in _ON | _OFF:
            raise ConfigurationError("auth must be on or off")
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ConfigurationError("tls_certfile and tls_keyfile go together")
        if self.auth_cache_ttl <= 0:
            raise ConfigurationError("auth_cache_ttl must be positive")
        if self.auth_stream_acl_ttl <= 0:
            raise ConfigurationError("auth_stream_acl_ttl must be positive")
        if not self.auth_open_paths.strip(" ,"):
            # From the environment an empty value is the default: it must not mean "none" here.
            raise ConfigurationError("auth_open_paths is empty: give /healthz to open nothing more")
        if self.statement_timeout <= self.delivery_timeout:
            raise ConfigurationError("statement_timeout must be above delivery_timeout")


def _parse(name: str, hint: Any, raw: str) -> Any:
    if hint is int or hint == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} must be an integer") from None
    if hint is float or hint == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} must be a number") from None
    if hint is str or hint == "str":
        return raw
    origin = typing.get_origin(hint)
    if origin in (Mapping, dict, types.MappingProxyType):
        return _parse_mapping(raw)
    raise ConfigurationError(f"cannot parse setting {name!r}")


def _parse_mapping(raw: str) -> dict[str, str]:
    """``key=value,key=value`` (librdkafka style)."""
    out: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigurationError(f"expected key=value in {raw!r}")
        out[key.strip()] = value.strip()
    return out


def environ_has(name: str) -> bool:
    """Whether the variable is present in the environment (even empty)."""
    return name in os.environ


def environ_get(name: str, default: str | None = None) -> str | None:
    """Read a non-setting variable (e.g. test service addresses); the one other env reader."""
    return os.environ.get(name, default)


def settings_environ(settings: Settings) -> dict[str, str]:
    """``KAFKASTORE_*`` variables that make another process build exactly ``settings``."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Mapping):
            if value:
                env[ENV_PREFIX + f.name.upper()] = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            env[ENV_PREFIX + f.name.upper()] = str(value)
    return env


def export_settings(settings: Settings) -> None:
    """Put ``settings`` in this process's environment, for worker processes it spawns."""
    os.environ.update(settings_environ(settings))


def child_environ(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process we start: ours plus ``overrides``."""
    return {**os.environ, **overrides}


def running_in_ci() -> bool:
    return (os.environ.get("CI") or "").lower() in {"1", "true", "yes"}
