"""Group commit: concurrent appends gathered into batches, several batches in flight.

Callers submit units (one append, or an atomic multi-stream append) and get a Future. Worker
threads - one PostgreSQL connection each, one shared idempotent producer - take what is queued
(waiting ``batch_wait`` for more while no other worker is idle, up to the size caps) and run it
as one transaction of the protocol (writer.protocol). Backpressure: queued plus running bytes
are bounded; a full writer makes in-process callers wait (up to ``backpressure_timeout``) and
HTTP callers get 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future

from kafkastore import pg
from kafkastore.config import Settings
from kafkastore.errors import KafkaStoreError, Unavailable
from kafkastore.records import AppendResult
from writer.decide import Deletion, Unit
from writer.delivery import SharedProducer
from writer.prepare import PreparedAppend
from writer.protocol import BatchRunner

logger = logging.getLogger("kafkastore.writer")


class Writer:
    """The append engine. ``open()`` is safe to call twice; ``close()`` drains and stops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        lock = threading.Lock()
        self._ready = threading.Condition(lock)
        """Workers wait here for work; one is woken per unit queued (not every worker)."""
        self._room = threading.Condition(lock)
        """Callers wait here for room under backpressure; woken as batches finish."""
        self._queue: deque[tuple[Unit, Future[list[AppendResult]]]] = deque()
        self._bytes = 0
        self._closing = False
        self._opened = False
        self._threads: list[threading.Thread] = []
        self._idle = 0
        """Workers waiting for work (guarded by the lock of ``_ready`` and ``_room``)."""
        self._producer: SharedProducer | None = None
        self.sysid = ""
        self.batches = 0
        self.appends = 0

    def open(self) -> Writer:
        """Read the cluster's system identifier, start the producer and the worker threads."""
        if self._opened:
            return self
        with pg.connect(self.settings.writer_url, autocommit=True) as conn:
            self.sysid = pg.system_identifier(conn)
        self._producer = SharedProducer(self.settings)
        self._opened = True
        for i in range(self.settings.max_inflight_batches):
            runner = BatchRunner(self.settings, self._producer, self.sysid)
            thread = threading.Thread(
                target=self._work, args=(runner,), name=f"kafkastore-writer-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued batches (bounded by ``timeout``), then fail what is left."""
        if not self._opened or self._closing:
            return
        with self._ready:
            self._closing = True
            self._ready.notify_all()
            self._room.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._producer is not None:
            self._producer.close()
        with self._ready:
            leftover = list(self._queue)
            self._queue.clear()
        for _, future in leftover:
            future.set_exception(Unavailable("the writer was closed"))

    @property
    def producer(self) -> SharedProducer:
        """The shared producer (the writer must be open)."""
        assert self._producer is not None
        return self._producer

    def submit(
        self,
        appends: Sequence[PreparedAppend],
        *,
        atomic: bool,
        wait: float | None = None,
    ) -> Future[list[AppendResult]]:
        """Queue a unit. ``wait`` is how long to wait for room (0 = fail at once when full)."""
        if not self._opened:
            raise Unavailable("the writer is not open")
        size = sum(a.size for a in appends)
        unit = Unit(tuple(appends), atomic, size)
        future: Future[list[AppendResult]] = Future()
        limit = self.settings.max_inflight_bytes
        max_queued = self.settings.batch_max_appends * self.settings.max_inflight_batches * 4
        timeout = self.settings.backpressure_timeout if wait is None else wait
        deadline = time.monotonic() + timeout
        with self._room:
            while self._bytes > 0 and (
                self._bytes + size > limit or len(self._queue) >= max_queued
            ):
                if self._closing:
                    raise Unavailable("the writer is closing")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(
                        "the writer is at capacity (in-flight bytes or queue full)",
                        retry_after=1.0,
                    )
                self._room.wait(remaining)
            if self._closing:
                raise Unavailable("the writer is closing")
            self._bytes += size
            self._queue.append((unit, future))
            self._ready.notify()
        return future

    def submit_deletion(self, deletion: Deletion) -> Future[list[AppendResult]]:
        """Queue a delete of one stream: decided in arrival order with the appends, under the
        same head row lock (its future's result is an empty list)."""
        if not self._opened:
            raise Unavailable("the writer is not open")
        unit = Unit((), False, 0, deletion)
        future: Future[list[AppendResult]] = Future()
        with self._ready:
            if self._closing:
                raise Unavailable("the writer is closing")
            self._queue.append((unit, future))
            self._ready.notify()
        return future

    def _take(self) -> list[tuple[Unit, Future[list[AppendResult]]]]:
        """Wait for work, then gather up to the caps (lingering ``batch_wait`` for more, unless
        another worker is idle: it would take whatever arrives meanwhile at once, so lingering
        would only delay this batch - a lone append at light load goes without waiting)."""
        settings = self.settings
        with self._ready:
            while True:
                self._idle += 1
                try:
                    while not self._queue and not self._closing:
                        self._ready.wait(0.5)
                finally:
                    self._idle -= 1
                if not self._queue:
                    return []  # closing, and nothing left to do
                linger = settings.batch_wait if self._idle == 0 else 0.0
                deadline = time.monotonic() + linger
                while (
                    len(self._queue) < settings.batch_max_appends
                    and not self._closing
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._ready.wait(remaining)
                taken: list[tuple[Unit, Future[list[AppendResult]]]] = []
                events = 0
                while self._queue and len(taken) < settings.batch_max_appends:
                    unit, future = self._queue[0]
                    count = sum(len(a.events) for a in unit.appends)
                    if taken and events + count > settings.batch_max_events:
                        break
                    self._queue.popleft()
                    taken.append((unit, future))
                    events += count
                if self._queue:
                    self._ready.notify()  # what this batch left: the next idle worker
                if taken:
                    return taken

    def _work(self, runner: BatchRunner) -> None:
        try:
            while True:
                taken = self._take()
                if not taken:
                    return
                settled = runner.run([unit for unit, _ in taken])
                with self._room:
                    self._bytes -= sum(unit.size for unit, _ in taken)
                    self.batches += 1
                    self.appends += len(taken)
                    self._room.notify_all()
                for (_, future), outcome in zip(taken, settled, strict=True):
                    if isinstance(outcome, KafkaStoreError):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            runner.close()
