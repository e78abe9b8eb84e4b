"""The index API in two flavours: :class:`Reads` (blocking) and :class:`AsyncReads` (asyncio).

What a read does is written once, in :mod:`indexer.read_steps` (consistency rules there); here
each flavour only does the I/O its steps ask for, in ``_do``: a
:class:`psycopg_pool.ConnectionPool` and a threaded listener, or an
:class:`psycopg_pool.AsyncConnectionPool` and an asyncio listener. The decorators
:func:`blocking` and :func:`awaiting` turn a step generator into the method of each flavour, with
its signature and docstring.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from indexer.notify import AsyncListener, Listener
from indexer.read_steps import Direction, Fetch, Op, ReadSteps, Steps, Wait
from indexer.wakeups import Watch
from kafkastore import pg
from kafkastore.config import Settings
from kafkastore.opening import Opening

__all__ = ["AsyncReads", "Direction", "Op", "ReadSteps", "Reads", "awaiting", "blocking"]

OPEN_TIMEOUT = 10.0
"""How long ``open`` waits for the pool's first connection before it fails."""

APPLICATION_NAME = "kafkastore-reads"
"""``application_name`` of the read pools' connections (``pg_stat_activity``)."""

T = TypeVar("T")
P = ParamSpec("P")
Done_co = TypeVar("Done_co", covariant=True)


class _Flavour(Protocol[Done_co]):
    """What :func:`blocking` and :func:`awaiting` need of a flavour: the steps and a ``_do``."""

    _steps: ReadSteps

    def _do(self, op: Op) -> Done_co: ...


def blocking(
    read: Callable[Concatenate[ReadSteps, P], Steps[T]],
) -> Callable[Concatenate[_Flavour[Any], P], T]:
    """The blocking method of ``read``: same signature and docstring, each step done by
    ``self._do``."""

    @functools.wraps(read)
    def method(self: _Flavour[Any], /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps = read(self._steps, *args, **kwargs)
        try:
            op = next(steps)
            while True:
                op = steps.send(self._do(op))
        except StopIteration as done:
            answer: T = done.value
            return answer

    return method


def awaiting(
    read: Callable[Concatenate[ReadSteps, P], Steps[T]],
) -> Callable[Concatenate[_Flavour[Awaitable[Any]], P], Coroutine[Any, Any, T]]:
    """The coroutine method of ``read``: :func:`blocking` with each step awaited."""

    @functools.wraps(read)
    async def method(self: _Flavour[Awaitable[Any]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps = read(self._steps, *args, **kwargs)
        try:
            op = next(steps)
            while True:
                op = steps.send(await self._do(op))
        except StopIteration as done:
            answer: T = done.value
            return answer

    return method


def _pool_kwargs(settings: Settings, max_size: int) -> dict[str, Any]:
    return {
        "conninfo": settings.database_url,
        "min_size": 1,
        "max_size": max_size,
        # Named, so that an operator (or a test) can tell the read pools' connections apart.
        "kwargs": {"autocommit": True, "application_name": APPLICATION_NAME},
        "open": False,
    }


def _configure(conn: psycopg.Connection) -> None:
    set_json_loads(orjson.loads, conn)


async def _configure_async(conn: psycopg.AsyncConnection) -> None:
    set_json_loads(orjson.loads, conn)


class Reads:
    """Blocking reads over a connection pool: ``Reads.open(settings)``, then ``close()`` (or
    ``with``). Thread-safe."""

    def __init__(self, settings: Settings, *, max_size: int = 10) -> None:
        self.settings = settings
        self._steps = ReadSteps(settings)
        self._pool = ConnectionPool(
            **_pool_kwargs(settings, max_size), configure=_configure, name="kafkastore-reads"
        )
        self._listener = Listener(settings.database_url)

    @classmethod
    def open(cls, settings: Settings, *, max_size: int = 10) -> Self:
        """Reads with an open pool; Unavailable when PostgreSQL does not answer in time."""
        reads = cls(settings, max_size=max_size)
        try:
            with pg.translated():
                reads._pool.open(wait=True, timeout=OPEN_TIMEOUT)
        except BaseException:
            reads.close()  # else the pool's workers keep trying to connect
            raise
        return reads

    def close(self) -> None:
        """Stop the listener and close the pool; returns at once when already closed."""
        self._listener.close()
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, op: Op) -> Any:
        if isinstance(op, Fetch):
            with pg.translated(), self._pool.connection() as conn:
                return conn.execute(op.query, op.params).fetchall()
        if isinstance(op, Wait):
            return self._listener.wait(op.generation, op.timeout)
        return self._listener.start()

    read_stream = blocking(ReadSteps.read_stream)
    read_category = blocking(ReadSteps.read_category)
    read_all = blocking(ReadSteps.read_all)
    stream_state = blocking(ReadSteps.stream_state)
    get_metadata = blocking(ReadSteps.get_metadata)
    latest_snapshot = blocking(ReadSteps.latest_snapshot)
    load = blocking(ReadSteps.load)


class AsyncReads:
    """Asyncio reads over a connection pool: ``await AsyncReads.open(settings)``, then
    ``await close()``; or ``async with AsyncReads.open(settings) as reads``. The same methods
    as :class:`Reads`, awaitable.

    The HTTP app opens one in its lifespan and keeps it in ``app.state.reads``.
    """

    def __init__(self, settings: Settings, *, max_size: int = 16) -> None:
        self.settings = settings
        self._steps = ReadSteps(settings)
        self._pool = AsyncConnectionPool(
            **_pool_kwargs(settings, max_size),
            configure=_configure_async,
            name="kafkastore-async-reads",
        )
        self._listener = AsyncListener(settings.database_url)

    @classmethod
    def open(cls, settings: Settings, *, max_size: int = 16) -> Opening[Self]:
        """Reads with an open pool: ``await`` it, or ``async with`` it (closed at the end);
        Unavailable when PostgreSQL does not answer in time."""
        return Opening(lambda: cls._opened(settings, max_size))

    @classmethod
    async def _opened(cls, settings: Settings, max_size: int) -> Self:
        reads = cls(settings, max_size=max_size)
        try:
            with pg.translated():
                await reads._pool.open(wait=True, timeout=OPEN_TIMEOUT)
        except BaseException:
            await reads.close()  # else the pool's workers keep trying to connect
            raise
        return reads

    async def close(self) -> None:
        """Stop the listener and close the pool; returns at once when already closed."""
        await self._listener.close()
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _do(self, op: Op) -> Any:
        if isinstance(op, Fetch):
            with pg.translated():
                async with self._pool.connection() as conn:
                    cur = await conn.execute(op.query, op.params)
                    return await cur.fetchall()
        if isinstance(op, Wait):
            return await self._listener.wait(op.generation, op.timeout)
        return await self._listener.start()

    async def listen(self) -> int:
        """Start the index listener (idempotent); returns its generation. Take
        :attr:`index_generation` before a read, then :meth:`wait_for_index` with it: a commit
        after the read wakes the waiter (see :mod:`indexer.notify`)."""
        return await self._listener.start()

    @property
    def index_generation(self) -> int:
        """Moves on at every index commit (NOTIFY), listener reconnect and close."""
        return self._listener.generation

    async def wait_for_index(self, generation: int, timeout: float) -> int:
        """The generation once it moved past ``generation`` or ``timeout`` passed."""
        return await self._listener.wait(generation, timeout)

    def watch(self, kind: str, name: str) -> Watch:
        """The wake-up of one stream or category (``kind`` "all": of every index commit), for a
        live subscription: its generation moves on only at the commits that may concern it
        (:mod:`indexer.wakeups`). Give it back with :meth:`unwatch`."""
        return self._listener.watch(kind, name)

    def unwatch(self, watch: Watch) -> None:
        """Give back a watch taken with :meth:`watch` (its key is forgotten with its last user)."""
        self._listener.unwatch(watch)

    read_stream = awaiting(ReadSteps.read_stream)
    read_category = awaiting(ReadSteps.read_category)
    read_all = awaiting(ReadSteps.read_all)
    stream_state = awaiting(ReadSteps.stream_state)
    get_metadata = awaiting(ReadSteps.get_metadata)
    latest_snapshot = awaiting(ReadSteps.latest_snapshot)
    load = awaiting(ReadSteps.load)
