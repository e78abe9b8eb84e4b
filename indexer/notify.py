"""One LISTEN connection per process, fanning ``kafkastore_index`` notifications out to waiters.

The indexer sends ``NOTIFY kafkastore_index, '<last_position>'`` in every transaction that
indexes events; PostgreSQL delivers it at COMMIT. A read waiting for ``min_version`` does:

    generation = listener.generation    # after the listener is listening
    check the index                     # a new READ COMMITTED snapshot
    wait until listener.generation != generation (bounded)

Any commit after the check bumps the generation, so no wake-up is lost and nobody polls. A lost
LISTEN connection is reopened; the reconnect bumps the generation too (waiters re-check, since
notifications sent while it was down are gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from indexer.projection import NOTIFY_CHANNEL
from kafkastore import pg

logger = logging.getLogger("kafkastore.indexer")

LISTEN = "LISTEN kafkastore_index"
assert NOTIFY_CHANNEL in LISTEN


START_TIMEOUT = 10.0
"""Longest a reader waits for the listener to start before relying on its own timeout."""


class AsyncListener:
    """The asyncio flavour: a task reads notifications, waiters await an asyncio.Event."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self.generation = 0
        self.last_position = 0
        self._event = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Start listening (idempotent); returns once LISTEN is active or failed once."""
        if self._closed:
            raise RuntimeError("listener is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kafkastore-index-listener")
        # Bounded: a listener that cannot connect sets _ready anyway; waiters then fall back
        # to their own timeouts.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), START_TIMEOUT)

    async def wait(self, generation: int, timeout: float) -> None:
        """Return when the generation moved past ``generation`` or ``timeout`` passed."""
        if self.generation != generation or timeout <= 0:
            return
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _bump(self) -> None:
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _run(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                conn = await pg.connect_async(self._url, autocommit=True)
            except Exception as exc:  # the listener must outlive any error: log and retry
                logger.warning("index listener cannot connect: %s", exc)
                self._ready.set()  # waiters fall back to their timeouts
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                async with conn:
                    with pg.translated():
                        await conn.execute(LISTEN)
                    delay = 0.1
                    self._bump()
                    self._ready.set()
                    with pg.translated():
                        async for note in conn.notifies():
                            if note.payload.isdigit():
                                self.last_position = max(self.last_position, int(note.payload))
                            self._bump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost or anything else: reopen
                logger.warning("index listener lost its connection: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._bump()


class Listener:
    """The threaded flavour: a daemon thread reading notifications; waiters use a Condition."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self.generation = 0
        self.last_position = 0
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def start(self) -> None:
        with self._cond:
            if self._closed.is_set():
                raise RuntimeError("listener is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kafkastore-index-listener", daemon=True
                )
                self._thread.start()
        self._ready.wait(START_TIMEOUT)

    def wait(self, generation: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.generation == generation and not self._closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _bump(self, position: int | None = None) -> None:
        with self._cond:
            if position is not None:
                self.last_position = max(self.last_position, position)
            self.generation += 1
            self._cond.notify_all()

    def _run(self) -> None:
        delay = 0.1
        while not self._closed.is_set():
            try:
                conn = pg.connect(self._url, autocommit=True)
            except Exception as exc:  # the listener must outlive any error: log and retry
                logger.warning("index listener cannot connect: %s", exc)
                self._ready.set()
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                with conn, pg.translated():
                    conn.execute(LISTEN)
                    delay = 0.1
                    self._bump()
                    self._ready.set()
                    while not self._closed.is_set():
                        # The timeout lets close() stop the thread within half a second.
                        for note in conn.notifies(timeout=0.5):
                            position = int(note.payload) if note.payload.isdigit() else None
                            self._bump(position)
            except Exception as exc:  # connection lost or anything else: reopen
                logger.warning("index listener lost its connection: %s", exc)
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._bump()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
