"""One LISTEN connection per process, fanning ``kafkastore_index`` notifications out to waiters.

The indexer sends ``NOTIFY kafkastore_index`` in every transaction that indexes events, with the
new last position and the streams (or categories) it touched (:mod:`indexer.wakeups`);
PostgreSQL delivers it at COMMIT. A read waiting for ``min_version`` does:

    generation = listener.start()       # returns once the listener is listening
    check the index                     # a new READ COMMITTED snapshot
    generation = listener.wait(generation, remaining)   # until the generation moves (bounded)

Any commit after the check bumps the generation, so no wake-up is lost and nobody polls. A lost
LISTEN connection is reopened; the reconnect bumps the generation too (waiters re-check, since
notifications sent while it was down are gone).

Live subscriptions wait on the :class:`~indexer.wakeups.Watch` of their stream or category
(:meth:`AsyncListener.watch`) instead: its generation moves only when a commit touched that key
(or may have: a payload that names nothing, a reconnect), so the feeds of a stream nobody writes
to are not woken by every commit of the store.

:class:`AsyncListener` is the one implementation (a task on the caller's event loop).
:class:`Listener`, for blocking callers, runs an AsyncListener on an event loop of its own
daemon thread and wakes its waiters through a Condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from indexer import wakeups
from indexer.projection import NOTIFY_CHANNEL
from kafkastore import pg
from kafkastore.retry import Backoff

logger = logging.getLogger("kafkastore.indexer")

LISTEN = "LISTEN kafkastore_index"
assert NOTIFY_CHANNEL in LISTEN


START_TIMEOUT = 10.0
"""Longest a reader waits for the listener to start before relying on its own timeout."""

RECONNECT = Backoff(initial=0.1, maximum=5.0)
"""Delays between attempts to (re)open the LISTEN connection."""

CLOSE_TIMEOUT = 2.0
"""Longest :meth:`Listener.close` waits for the listener's thread to stop."""


class AsyncListener:
    """A task reads notifications and hands each to the :class:`~indexer.wakeups.Watches`;
    waiters await the watch of everything (:meth:`wait`) or of their key (:meth:`watch`).

    ``on_bump`` (optional) is called on the listener's event loop after every bump.
    """

    def __init__(self, database_url: str, *, on_bump: Callable[[], None] | None = None) -> None:
        self._url = database_url
        self._on_bump = on_bump
        self.watches = wakeups.Watches()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> int:
        """Start listening (idempotent); returns the generation once LISTEN is active or has
        failed once."""
        if self._closed:
            raise RuntimeError("listener is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kafkastore-index-listener")
        # Bounded: a listener that cannot connect sets _ready anyway; waiters then fall back
        # to their own timeouts.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), START_TIMEOUT)
        return self.generation

    @property
    def generation(self) -> int:
        """Moves on at every notification, reconnect and close."""
        return self.watches.generation

    async def wait(self, generation: int, timeout: float) -> int:
        """Return the generation once it moved past ``generation`` or ``timeout`` passed."""
        return await self.watches.everything.wait(generation, timeout)

    def watch(self, kind: str, name: str) -> wakeups.Watch:
        """The wake-up of a stream or a category (``kind`` "all": of every commit); give it back
        with :meth:`unwatch`. Its generation moves on only when a commit may concern it."""
        return self.watches.acquire(kind, name)

    def unwatch(self, watch: wakeups.Watch) -> None:
        """Give back a watch taken with :meth:`watch`."""
        self.watches.release(watch)

    def _bump(self, touched: wakeups.Touched = wakeups.ANYTHING) -> None:
        self.watches.touch(touched)
        if self._on_bump is not None:
            self._on_bump()

    async def _run(self) -> None:
        delays = RECONNECT.delays()
        while True:  # until close() cancels the task
            try:
                conn = await pg.connect_async(self._url, autocommit=True)
                async with conn:
                    with pg.translated():
                        await conn.execute(LISTEN)
                        delays = RECONNECT.delays()
                        self._bump()
                        self._ready.set()
                        async for note in conn.notifies():
                            self._bump(wakeups.parse(note.payload))
            except Exception as exc:  # the listener must outlive any error: log and reopen
                logger.warning("index listener lost or cannot open its connection: %s", exc)
                self._ready.set()  # waiters fall back to their timeouts
                await asyncio.sleep(next(delays))

    async def close(self) -> None:
        """Stop listening and wake every waiter; returns at once when already closed."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._bump()


class Listener:
    """The blocking flavour: an :class:`AsyncListener` on an event loop of its own daemon
    thread; waiters sleep on a Condition that every bump notifies."""

    def __init__(self, database_url: str) -> None:
        self._cond = threading.Condition()
        self._core = AsyncListener(database_url, on_bump=self._notify_waiters)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def generation(self) -> int:
        """Moves on at every notification, reconnect and close."""
        return self._core.generation

    def start(self) -> int:
        """Start listening (idempotent); returns the generation once LISTEN is active or has
        failed once."""
        with self._cond:
            if self._closed:
                raise RuntimeError("listener is closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="kafkastore-index-listener", daemon=True
                )
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(self._core.start(), loop).result()

    def wait(self, generation: int, timeout: float) -> int:
        """Return the generation once it moved past ``generation`` or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.generation == generation and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        return self.generation

    def _notify_waiters(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop listening and the thread, wake every waiter; returns at once when closed."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self._core.close(), loop)
        with contextlib.suppress(TimeoutError):
            closing.result(CLOSE_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CLOSE_TIMEOUT)
        if not thread.is_alive():
            loop.close()
