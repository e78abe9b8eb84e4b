"""The exit statuses of ``kafkastore`` and the errors that end a command with each
(docs/cli.md "Exit codes" has the same table; ``tests/test_docs.py`` keeps them equal)."""

from __future__ import annotations

from dataclasses import dataclass

from kafkastore.errors import (
    AlreadyExists,
    AppendConflicts,
    ConfigurationError,
    DuplicateEventId,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    KafkaStoreError,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    SchemaError,
    SnapshotAboveHead,
    SnapshotNotFound,
    StreamDeleted,
    StreamNotFound,
    TruncateAboveHead,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WrongExpectedVersion,
    WrongMetadataVersion,
)


@dataclass(frozen=True, slots=True)
class ExitCode:
    """One exit status of ``kafkastore``, and the errors that end a command with it."""

    code: int
    """The process exit status."""
    name: str
    """A short name (docs/cli.md)."""
    meaning: str
    """When a command exits with it."""
    errors: tuple[type[KafkaStoreError], ...] = ()
    """Our errors that map to it (subclasses included, most specific first)."""


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(0, "ok", "the command did what it was asked"),
    ExitCode(
        1,
        "failed",
        "the command ran and the answer is no: a conflict (wrong expected version, duplicate"
        " event id, stale metadata version, snapshot or truncate_before above the head), a"
        " missing or deleted stream or snapshot, an audit or a verification that found"
        " problems, a missing topic,"
        " a dev stack already running",
        (
            WrongExpectedVersion,
            AppendConflicts,
            DuplicateEventId,
            StreamNotFound,
            StreamDeleted,
            IntegrityError,
            WrongMetadataVersion,
            SnapshotAboveHead,
            TruncateAboveHead,
            SnapshotNotFound,
        ),
    ),
    ExitCode(
        2,
        "usage",
        "bad arguments or input: unknown options, invalid JSON, bad names or expected version,"
        " a payload over a limit, contradictory settings; nothing was done",
        (
            NotFound,
            AlreadyExists,
            InvalidRequest,
            UnsupportedMediaType,
            PayloadTooLarge,
            ConfigurationError,
        ),
    ),
    ExitCode(
        3,
        "unavailable",
        "Kafka, PostgreSQL or the HTTP API could not be reached or timed out, or the schema is"
        " not migrated; nothing was appended; retry later",
        (Unavailable, SchemaError),
    ),
    ExitCode(
        4,
        "outcome unknown",
        "an append whose COMMIT reply was lost and could not be settled: retry with the same"
        " event ids (answered idempotently)",
        (OutcomeUnknown,),
    ),
    ExitCode(
        5,
        "refused",
        "the HTTP API refused the credentials (unauthorized) or the right (forbidden)",
        (Unauthorized, Forbidden),
    ),
    ExitCode(130, "interrupted", "stopped by Ctrl-C (SIGINT)"),
)
"""Every exit status of ``kafkastore``."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_UNKNOWN, EXIT_REFUSED, EXIT_INTERRUPTED = (
    e.code for e in EXIT_CODES
)


def exit_code_of(error: KafkaStoreError) -> int:
    """The exit status for ``error``: its most specific class in :data:`EXIT_CODES`."""
    by_class = {cls: e.code for e in EXIT_CODES for cls in e.errors}
    for cls in type(error).__mro__:
        if cls in by_class:
            return by_class[cls]
    return EXIT_FAILED
