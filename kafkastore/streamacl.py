"""Stream ACLs for the access decision, from a per-process cache (docs/http.md "Security").

A stream's ACL is the ``acl`` of its metadata (``streams.metadata->'acl'``, written by
``PUT /streams/{id}/metadata``). :class:`StreamAclCache` answers ``stream_id -> Acl | None``
from memory: an entry (also "no ACL") lives at most ``ttl`` seconds
(``auth_stream_acl_ttl``, 1 s by default), and is dropped at once

- in the process that wrote the metadata (:meth:`StreamAclCache.forget`, called by the
  metadata route after its commit), and
- in every other process on ``NOTIFY kafkastore_stream_acl`` (migration 0006: a trigger sends
  it in the transaction of the change), and all entries when the listening connection is
  re-established (notifications may have been lost meanwhile).

So a change is enforced for the next request of the writing process, within milliseconds in the
others, and within ``ttl`` even when a notification is lost. A hot stream costs no database
round trip; a miss costs one query (one per batch of streams, shared by concurrent requests).

A hard-deleted (tombstoned) stream keeps its metadata, so authorisation sees its last ACL: a
caller without the right is refused (403) before the route could answer 410, exactly as on a
stream that never existed. An ACL that no longer parses grants nothing (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from psycopg_pool import AsyncConnectionPool

from kafkastore import auth, pg
from kafkastore.errors import InvalidRequest, KafkaStoreError
from kafkastore.retry import Backoff

logger = logging.getLogger("kafkastore.auth")

CHANNEL = "kafkastore_stream_acl"
LISTEN = "LISTEN kafkastore_stream_acl"
SELECT_ACLS = "SELECT stream_id, metadata->'acl' FROM streams WHERE stream_id = ANY(%s::text[])"
MAX_ENTRIES = 100_000
"""Entries kept at most; beyond it the cache starts afresh (an entry is cheap to reload)."""
POOL_SIZE = 4
"""Connections of the cache's pool per API process (plus one that listens)."""
POOL_TIMEOUT = 5.0
"""A miss waits at most this long for a connection (then 503, as PostgreSQL is unavailable)."""
OPEN_TIMEOUT = 10.0

DENY_ALL = auth.Acl(dict.fromkeys(auth.ACL_ACTIONS, ()))
"""What a stored ACL that does not parse grants: nothing (admins and ops reads still pass)."""

Loader = Callable[[list[str]], Awaitable[Mapping[str, Any]]]
"""Stream ids -> the stored ``acl`` JSON of those that have a row (absent or None: no ACL)."""


def parse_stored(stream_id: str, value: Any) -> auth.Acl | None:
    """The ACL of a stored ``acl`` value; None when there is none, :data:`DENY_ALL` when bad."""
    if value is None:
        return None
    try:
        return auth.Acl.parse(value)
    except InvalidRequest as exc:
        logger.warning("stream %r has an ACL that does not parse (denying): %s", stream_id, exc)
        return DENY_ALL


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a load's failure retrieved: the requests awaiting it raise it (nobody may be left)."""
    if not task.cancelled():
        task.exception()


class StreamAclCache:
    """``stream_id -> Acl | None`` with a ``ttl``, kept fresh by LISTEN/NOTIFY (asyncio)."""

    def __init__(
        self,
        database_url: str,
        *,
        ttl: float = 1.0,
        load: Loader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database_url = database_url
        self.ttl = ttl
        self._clock = clock
        self._load = load or self._query
        self._pool: AsyncConnectionPool | None = None
        self._entries: dict[str, tuple[auth.Acl | None, float]] = {}
        self._pending: dict[str, asyncio.Task[dict[str, auth.Acl | None]]] = {}
        self._generation = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the pool (raises when PostgreSQL is down) and follow the notifications."""
        self._pool = AsyncConnectionPool(
            self.database_url,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            kwargs={"autocommit": True},
            timeout=POOL_TIMEOUT,
            name="kafkastore-stream-acl",
        )
        with pg.translated():
            await self._pool.open(wait=True, timeout=OPEN_TIMEOUT)
        self._task = asyncio.create_task(self._follow(), name="kafkastore-stream-acl-cache")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            await self._pool.close()

    async def __call__(self, stream_id: str) -> auth.Acl | None:
        return (await self.acls([stream_id]))[stream_id]

    async def acls(self, stream_ids: Iterable[str]) -> dict[str, auth.Acl | None]:
        """The ACL of each stream: from memory when fresh, else one query for all the misses
        (a miss already being loaded for another request waits for that load). The load runs
        as its own task: a request cancelled meanwhile does not cancel it for the others."""
        now = self._clock()
        found: dict[str, auth.Acl | None] = {}
        loads: dict[str, asyncio.Task[dict[str, auth.Acl | None]]] = {}
        misses: list[str] = []
        for stream_id in dict.fromkeys(stream_ids):
            entry = self._entries.get(stream_id)
            if entry is not None and now - entry[1] < self.ttl:
                found[stream_id] = entry[0]
            elif stream_id in self._pending:
                loads[stream_id] = self._pending[stream_id]
            else:
                misses.append(stream_id)
        if misses:
            task = asyncio.create_task(self._fetch(misses), name="kafkastore-stream-acl-load")
            task.add_done_callback(_retrieve)
            for stream_id in misses:
                self._pending[stream_id] = loads[stream_id] = task
        for stream_id, load in loads.items():
            found[stream_id] = (await asyncio.shield(load))[stream_id]
        return found

    async def _fetch(self, stream_ids: list[str]) -> dict[str, auth.Acl | None]:
        generation, started = self._generation, self._clock()
        try:
            stored = await self._load(stream_ids)
        finally:
            current = asyncio.current_task()
            for s in stream_ids:
                if self._pending.get(s) is current:
                    del self._pending[s]
        acls = {s: parse_stored(s, stored.get(s)) for s in stream_ids}
        if generation == self._generation:  # no change was notified while loading
            if len(self._entries) + len(acls) > MAX_ENTRIES:
                self._entries.clear()
            for s, acl in acls.items():
                self._entries[s] = (acl, started)
        return acls

    def forget(self, stream_id: str | None = None) -> None:
        """Drop the entry of ``stream_id`` (every entry for None): its metadata changed."""
        self._generation += 1
        if stream_id is None:
            self._entries.clear()
        else:
            self._entries.pop(stream_id, None)

    async def _query(self, stream_ids: list[str]) -> Mapping[str, Any]:
        assert self._pool is not None, "start() first"
        with pg.translated():
            async with self._pool.connection() as conn:
                rows = await (await conn.execute(SELECT_ACLS, (stream_ids,))).fetchall()
        return {row[0]: row[1] for row in rows}

    async def _follow(self) -> None:
        """Drop entries as notifications arrive; on (re)connect drop them all (notifications
        may have been lost meanwhile); the ``ttl`` bounds staleness whatever happens."""
        backoff = Backoff(initial=0.1, maximum=max(self.ttl, 0.1))
        async for _attempt in backoff.attempts_async():
            try:
                conn = await pg.connect_async(self.database_url, autocommit=True)
                async with conn:
                    with pg.translated():
                        await conn.execute(LISTEN)
                        self.forget()
                        async for notify in conn.notifies():
                            self.forget(notify.payload or None)
            except KafkaStoreError as exc:
                logger.warning("stream ACL cache cannot follow PostgreSQL (retrying): %s", exc)
