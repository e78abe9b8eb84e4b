"""PostgreSQL client factory and the one boundary where psycopg errors become ours.

:data:`ERRORS` maps psycopg exception classes to our error classes; :func:`translated` applies
it to the statements in its block (``raise Ours(...) from exc``). The few statements whose
driver error decides the outcome (a user without privilege on ``pg_control_system()``) are
functions here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import PoolTimeout

from kafkastore.errors import KafkaStoreError, SchemaError, Unavailable

logger = logging.getLogger("kafkastore.pg")

_UNAVAILABLE = "PostgreSQL unavailable: {reason}"

# psycopg exception class -> our error class and message; the first entry that matches wins
# (subclasses before their bases). Everything else is a bug or an integrity problem and
# propagates as it is.
ERRORS: tuple[tuple[type[psycopg.Error], type[KafkaStoreError], str], ...] = (
    # An OperationalError too; named apart because a pool timeout is about the pool's size.
    (PoolTimeout, Unavailable, "PostgreSQL pool exhausted: {reason}"),
    (
        psycopg.errors.UndefinedTable,
        SchemaError,
        "the kafkastore schema is missing (run `kafkastore migrate`): {text}",
    ),
    (
        psycopg.errors.UndefinedColumn,
        SchemaError,
        "the kafkastore schema is older than this code (run `kafkastore migrate`): {text}",
    ),
    # Unreachable, overloaded or timed out: retriable.
    (psycopg.errors.LockNotAvailable, Unavailable, _UNAVAILABLE),  # lock_timeout
    (psycopg.errors.QueryCanceled, Unavailable, _UNAVAILABLE),  # statement_timeout
    (psycopg.errors.SerializationFailure, Unavailable, _UNAVAILABLE),
    (psycopg.errors.DeadlockDetected, Unavailable, _UNAVAILABLE),
    (psycopg.errors.IdleInTransactionSessionTimeout, Unavailable, _UNAVAILABLE),
    (psycopg.errors.TooManyConnections, Unavailable, _UNAVAILABLE),
    (psycopg.errors.CannotConnectNow, Unavailable, _UNAVAILABLE),
    # Connection refused or lost, server shutdown, admin termination.
    (psycopg.OperationalError, Unavailable, _UNAVAILABLE),
)


def translate(exc: BaseException) -> KafkaStoreError | None:
    """Our error for a psycopg exception (by :data:`ERRORS`), or None when it is not one we map."""
    for driver, ours, message in ERRORS:
        if isinstance(exc, driver):
            return ours(message.format(reason=_first_line(exc), text=exc))
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


class Connection(psycopg.Connection[Any]):
    """psycopg's connection with a cursor kept per hot statement (:func:`execute`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statement_cursors: dict[tuple[str, bool], psycopg.Cursor[Any]] = {}


def connect(database_url: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """A new connection; connection failures raise Unavailable."""
    with translated():
        return Connection.connect(database_url, autocommit=autocommit, **kwargs)  # type: ignore[arg-type]


def execute(
    conn: psycopg.Connection,
    query: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    binary: bool = False,
    prepare: bool | None = None,
) -> psycopg.Cursor[Any]:
    """``conn.execute(query, params)`` on a cursor kept for ``query`` (connections of
    :func:`connect`; others get a new cursor, as ``conn.execute`` does).

    A cursor keeps its adapters: the dumpers of its parameters, arrays included, which a new
    cursor finds again by inspecting the values (about 50 us of CPU per statement on a small
    machine, measured). Its result is that of the last execution: read it before ``query``
    runs again on ``conn``. ``binary``: results in binary format (arrays cost less to send and
    to load); ``prepare`` as psycopg's.
    """
    if not isinstance(conn, Connection):
        return conn.cursor(binary=binary).execute(query, params, prepare=prepare)
    key = (query, binary)
    cursors = conn.statement_cursors
    cur = cursors.get(key)
    if cur is None or cur.closed:
        cur = cursors[key] = conn.cursor(binary=binary)
    cur.execute(query, params, prepare=prepare)
    return cur


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
RECORD_SYSID = """
INSERT INTO store_meta (key, value)
SELECT 'system_identifier', system_identifier::text FROM pg_control_system()
ON CONFLICT (key) DO NOTHING
"""


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


def record_system_identifier(conn: psycopg.Connection) -> bool:
    """Store the cluster's system identifier in ``store_meta`` (kept when already there), for
    roles whose user may not read ``pg_control_system()``; False when this user may not."""
    with translated():
        try:
            with conn.transaction():
                conn.execute(RECORD_SYSID)
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


def set_session_timeouts(
    conn: psycopg.Connection, *, lock_timeout: float, statement_timeout: float, idle_timeout: float
) -> None:
    """The writer's timeout ladder (docs/design.md section 2) as session settings."""
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


LOCAL_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"
WAIT_SHARED = "SELECT count(pg_advisory_xact_lock_shared(%s, k)) FROM unnest(%s::int4[]) AS k"


def after_advisory_locks(
    conn: psycopg.Connection,
    space: int,
    keys: Sequence[int],
    timeout: float,
    *,
    then: tuple[str, Sequence[Any]],
    binary: bool = False,
    prepare: bool | None = None,
) -> list[Any] | None:
    """Wait at most ``timeout`` seconds until no session holds any of the transaction-scoped
    advisory locks ``(space, key)`` exclusively, then run ``then`` (a query and its
    parameters, run as :func:`execute` runs it with ``binary`` and ``prepare``); its rows, or
    None when a lock was still held at ``lock_timeout``.

    One pipelined round trip, in a transaction of its own (``conn`` must be in autocommit
    mode): the locks are taken shared and released by its COMMIT. The query is a statement of
    its own after the wait, so at READ COMMITTED its snapshot sees what the lock holders
    committed (PostgreSQL releases a transaction's locks after its commit is visible). Other
    failures raise ours, like :func:`translated`.
    """
    limit = f"{max(1, int(timeout * 1000))}ms"
    query, params = then
    with translated():
        try:
            with conn.pipeline(), conn.transaction():
                execute(conn, LOCAL_LOCK_TIMEOUT, (limit,))
                execute(conn, WAIT_SHARED, (space, list(keys)))
                cur = execute(conn, query, params, binary=binary, prepare=prepare)
        except psycopg.errors.LockNotAvailable:
            return None
        return cur.fetchall()


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
    (docs/design.md section 2, step 5).
    """
    try:
        yield
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError):
        raise
    except psycopg.Error as exc:
        ours = translate(exc) or Unavailable(f"PostgreSQL failed at COMMIT: {_first_line(exc)}")
        raise ours from exc
