"""PostgreSQL client factory and the one boundary where psycopg errors become ours."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import psycopg
import psycopg.errors
from psycopg import sql

from kafkastore.errors import KafkaStoreError, SchemaError, Unavailable

logger = logging.getLogger("kafkastore.pg")

# Which psycopg failures mean "the database is unreachable or timed out" (retriable) vs
# "the schema is missing". Everything else is a bug or an integrity problem and propagates.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection refused/lost, server shutdown, admin termination
    psycopg.errors.LockNotAvailable,  # lock_timeout
    psycopg.errors.QueryCanceled,  # statement_timeout
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.IdleInTransactionSessionTimeout,
    psycopg.errors.TooManyConnections,
    psycopg.errors.CannotConnectNow,
)


def translate(exc: BaseException) -> KafkaStoreError | None:
    """Our error for a psycopg exception, or None when it is not one we map."""
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return SchemaError(f"the kafkastore schema is missing (run `kafkastore migrate`): {exc}")
    if isinstance(exc, _UNAVAILABLE):
        return Unavailable(f"PostgreSQL unavailable: {_first_line(exc)}")
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover - psycopg_pool is a dependency
        return None
    if isinstance(exc, PoolTimeout):
        return Unavailable(f"PostgreSQL pool exhausted: {_first_line(exc)}")
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise mapped psycopg errors as kafkastore errors (``raise Ours from exc``)."""
    try:
        yield
    except psycopg.Error as exc:
        ours = translate(exc)
        if ours is None:
            raise
        raise ours from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(database_url: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """A new connection; connection failures raise Unavailable."""
    with translated():
        return psycopg.connect(database_url, autocommit=autocommit, **kwargs)  # type: ignore[arg-type]


async def connect_async(
    database_url: str, *, autocommit: bool = False, **kwargs: object
) -> psycopg.AsyncConnection:
    with translated():
        return await psycopg.AsyncConnection.connect(
            database_url,
            autocommit=autocommit,
            **kwargs,  # type: ignore[arg-type]
        )


SYSTEM_IDENTIFIER = "SELECT system_identifier::text FROM pg_control_system()"
META_SYSID = "SELECT value FROM store_meta WHERE key = 'system_identifier'"


def system_identifier(conn: psycopg.Connection) -> str:
    """The cluster's system identifier (``ce_pgsysid``): live when allowed, else as migrated."""
    with translated():
        try:
            with conn.transaction():
                row = conn.execute(SYSTEM_IDENTIFIER).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            row = conn.execute(META_SYSID).fetchone()
    if row is None:
        raise SchemaError("system identifier unknown: run `kafkastore migrate`")
    return str(row[0])


def set_session_timeouts(
    conn: psycopg.Connection, *, lock_timeout: float, statement_timeout: float, idle_timeout: float
) -> None:
    """The writer's timeout ladder (DESIGN.md section 2) as session settings."""
    for name, seconds in (
        ("lock_timeout", lock_timeout),
        ("statement_timeout", statement_timeout),
        ("idle_in_transaction_session_timeout", idle_timeout),
    ):
        conn.execute(
            sql.SQL("SELECT set_config({}, {}, false)").format(
                sql.Literal(name), sql.Literal(f"{int(seconds * 1000)}ms")
            )
        )


# -- writer transaction helpers --


def discard(conn: psycopg.Connection) -> None:
    """Roll back ``conn``'s transaction; close ``conn`` when even that fails (it is broken: the
    owner opens a new one on next use)."""
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg.Error:
        conn.close()


@contextlib.contextmanager
def commit_translated() -> Iterator[None]:
    """:func:`translated` for statements pipelined with COMMIT, whose failure may hide a commit.

    The server refusing a statement (IntegrityError, DataError) proves that nothing committed:
    like every error we do not map, it propagates as the driver's error (a bug to log, not an
    outcome to settle). Every other psycopg failure - the connection or the reply lost, the
    session terminated, a timeout - raises Unavailable: the caller must settle the outcome
    (DESIGN.md section 2, step 5).
    """
    try:
        yield
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError):
        raise
    except psycopg.Error as exc:
        ours = translate(exc) or Unavailable(f"PostgreSQL failed at COMMIT: {_first_line(exc)}")
        raise ours from exc
