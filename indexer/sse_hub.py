"""The fan-out of live subscriptions in one process: one index read per wake-up per feed.

A subscription (:func:`follow`) first pages the index on its own from its start (catch-up), with
the same read functions as ``GET /all``, ``/categories`` and ``/streams``
(:class:`~indexer.reads.AsyncReads`): it never shows a phantom nor an event those reads hide.
Once a page comes back short it is at the head and joins the :class:`Hub`: every subscription
of the same *feed key* — route, category or stream, type filter, and the position reached
(:class:`Key`) — is served by one :class:`Reader` task that reads the index once per wake-up and
hands the rendered page (:class:`Page`, SSE bytes shared by every subscriber) to each
subscriber's bounded :class:`Mailbox`. 1 900 idle subscribers of ``$all`` cost one read per
index commit instead of 1 900.

Why nothing is skipped or repeated:

- Global positions are gap-free and handed out in commit order, so paging by
  ``next_position`` never skips an event that commits later with a lower position (a stream
  pages by version). A reader at position P reads from P; whoever joins it at P has had
  everything before P, so whatever it reads next (also a read in flight when they joined) is
  exactly what they need.
- When a reader's read moves it to P' and another reader already is at P' with the same key,
  its subscribers move to that one (they had everything before P') and it ends: readers merge
  as they reach the same position, so a burst of new subscribers ends up on one reader.
- A reader takes the generation of its key's :class:`~indexer.wakeups.Watch` *before* each
  read and waits on it (:mod:`indexer.notify`): any index commit after the read that touched
  its stream or category (any commit at all for ``$all``) wakes it; nothing is polled and no
  wake-up is lost. A new reader waits on the generation its first subscriber took, from the
  same watch (held for the feed's whole life), before its own last read.

Cost: a commit wakes only the readers of ``$all`` and of the streams and categories it touched
(the indexer's notification names them), so a thousand feeds of a thousand quiet streams cost
no read when another stream is written. Reads of the readers are gated (:data:`HUB_READS` at
once, the others queue): a commit that wakes many keys never exhausts the read pool, and a
transient failure of a read (:class:`~kafkastore.errors.Unavailable`: the pool timed out, a
connection was lost) is retried after a pause instead of ending the feeds.

Bounds: a mailbox holds at most :data:`MAILBOX_PAGES` pages and :data:`MAILBOX_BYTES` bytes. A
reader never waits for a subscriber: when one's mailbox is full it is *detached* — it drains
what it has and pages on its own again from there (holding one page), then rejoins at the head.
A client that accepts no data at all is cut off by the send timeout of
:class:`~indexer.sse.EventStream` (logged), so a slow subscriber never stalls the others and
never holds more than its mailbox.

This module is longer than ~400 lines: the reader, the hub and a subscription's loop share one
set of invariants (the generation taken before each read, readers keyed and merged by position,
the bounded mailboxes), which are checked together more easily than across modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Container, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from indexer import metrics, render
from indexer.reads import AsyncReads
from indexer.wakeups import Watch
from kafkastore.errors import Forbidden, StreamDeleted, StreamNotFound, Unavailable
from kafkastore.records import RecordedEvent
from kafkastore.retry import Backoff

logger = logging.getLogger("kafkastore.sse")

HEARTBEAT = b": heartbeat\n\n"
DELETED = b": stream deleted\n\n"
MAILBOX_PAGES = 16
"""Pages a subscriber may have waiting before it is detached from its reader."""
MAILBOX_BYTES = 4 * 1024 * 1024
"""Bytes a subscriber may have waiting before it is detached (one page is always accepted)."""
READER_WAIT = 60.0
"""Longest a reader waits for a notification before it reads again anyway."""
CATCHUP_READS = 8
"""Catch-up reads of subscriptions running at once per process (half the read pool): a burst of
thousands of new subscribers queues here instead of exhausting the pool that the readers, and
every other read of the API, need."""
HUB_READS = 8
"""Reads of the readers at the head running at once per process (the other half of the pool):
a commit that wakes more keys than that queues them here."""
RETRY = Backoff(initial=0.1, maximum=5.0)
"""Pauses of a reader between attempts of a read that failed for a transient reason."""
RETRY_LOG_INTERVAL = 5.0
"""At most one log line per this many seconds about failed reads (per process)."""

Allowed = Callable[[list[str]], Awaitable[Container[str]]]
"""Of these stream ids, the ones the subscriber may read (the access rule of the app)."""


@dataclass(frozen=True, slots=True)
class Feed:
    """What one subscription follows: ``kind`` is "all", "category" or "stream"."""

    kind: str
    name: str
    start: int
    """The first global position (or version, for a stream) to send."""
    types: tuple[str, ...] | None
    """Only these event types (sorted, no duplicates), or every type."""


class Key(NamedTuple):
    """Feeds with equal keys read exactly the same pages from here on."""

    kind: str
    name: str
    types: tuple[str, ...] | None
    at: int


@dataclass(frozen=True, slots=True)
class Page:
    """One read's messages — ``(stream id, SSE bytes)`` — and where the next read starts."""

    messages: tuple[tuple[str, bytes], ...]
    next: int
    full: bool
    """The read returned as many events as it may: read on before waiting."""
    size: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The feed ends: send ``comment`` last (the stream was deleted), or raise ``error``."""

    comment: bytes = b""
    error: BaseException | None = None


def message(feed_id: int, event: RecordedEvent) -> bytes:
    """One SSE message: ``id:`` then ``data:`` (orjson output has no newline)."""
    return b"id: %d\ndata: %s\n\n" % (feed_id, orjson.dumps(render.event_json(event)))


def _page(events: Iterable[tuple[int, RecordedEvent]], nxt: int, full: bool) -> Page:
    messages = tuple((e.stream_id, message(i, e)) for i, e in events)
    return Page(messages, nxt, full, sum(len(m) for _, m in messages))


async def read_page(reads: AsyncReads, key: Key, limit: int) -> Page:
    """The page of ``key`` from ``key.at``; raises StreamDeleted for a hard-deleted stream."""
    if key.kind == "stream":
        try:
            page = await reads.read_stream(key.name, from_version=key.at, limit=limit)
        except StreamNotFound:
            return Page((), key.at, False, 0)  # not created yet: wait for it
        events = page.events
        wanted = set(key.types) if key.types else None
        nxt = events[-1].version + 1 if events else key.at
        kept = ((e.version, e) for e in events if wanted is None or e.type in wanted)
        return _page(kept, nxt, len(events) >= limit)
    if key.kind == "category":
        cpage = await reads.read_category(
            key.name, from_position=key.at, limit=limit, types=key.types
        )
    else:
        cpage = await reads.read_all(from_position=key.at, limit=limit, types=key.types)
    positioned = ((e.global_position or 0, e) for e in cpage.events)
    return _page(positioned, cpage.next_position or key.at, len(cpage.events) >= limit)


class Mailbox:
    """What a reader hands one subscriber: pages (or the end) and a wake-up; bounded."""

    def __init__(self, wake: asyncio.Event) -> None:
        self.items: deque[Page | Closed] = deque()
        self.size = 0
        self.wake = wake
        self.reader: Reader | None = None
        self.detached = False
        """The reader dropped it (its mailbox was full): page on your own from your position."""

    def offer(self, item: Page | Closed) -> bool:
        """Queue ``item`` unless the mailbox is full (an end is always queued)."""
        if isinstance(item, Page):
            if self.items and (
                len(self.items) >= MAILBOX_PAGES or self.size + item.size > MAILBOX_BYTES
            ):
                return False
            self.size += item.size
        self.items.append(item)
        self.wake.set()
        return True

    def take(self) -> Page | Closed | None:
        if not self.items:
            return None
        item = self.items.popleft()
        if isinstance(item, Page):
            self.size -= item.size
        return item


class Reader:
    """The one task that reads the index for every subscriber of a key."""

    def __init__(self, hub: Hub, key: Key, generation: int) -> None:
        self.hub = hub
        self.key = key
        self.watch = hub.reads.watch(key.kind, key.name)
        """Given back when the task ends."""
        self.mailboxes: set[Mailbox] = set()
        self.emptied = asyncio.Event()
        self.task = asyncio.create_task(self._run(generation), name=f"kafkastore-sse-{key}")

    def add(self, mailbox: Mailbox) -> None:
        mailbox.reader = self
        self.mailboxes.add(mailbox)
        self.emptied.clear()

    def remove(self, mailbox: Mailbox) -> None:
        self.mailboxes.discard(mailbox)
        mailbox.reader = None
        if not self.mailboxes:
            self.emptied.set()

    def _done(self) -> bool:
        """Whether to stop (no subscriber left, or closing); then the hub forgets it at once
        (no await between the check and the removal: nobody joins a reader that is ending)."""
        if self.mailboxes and not self.hub.closing.is_set():
            return False
        self.hub.forget(self)
        return True

    async def _run(self, generation: int | None) -> None:
        pauses = RETRY.delays()
        try:
            while not self._done():
                if generation is not None:
                    await self.hub.wait(self.watch, generation, self.emptied)
                    if self._done():
                        return
                async with self.hub.reading:  # queue here, not in the pool
                    if self._done():
                        return
                    generation = self.watch.generation  # before the read
                    try:
                        page = await self.hub.read(self.key)
                    except StreamDeleted:
                        self._end(Closed(comment=DELETED))
                        return
                    except Unavailable as exc:  # transient: the feeds wait, the read is retried
                        page = None
                        self.hub.read_failed(self.key, exc)
                    except Exception as exc:  # every subscriber ends with it (EventStream logs it)
                        self._end(Closed(error=exc))
                        return
                if page is None:
                    await self.hub.pause(next(pauses), self.emptied)
                    generation = None  # read again
                    continue
                pauses = RETRY.delays()
                if page.messages:
                    self._deliver(page)
                if not self._move(page.next):
                    return  # merged into the reader already at that position
                if page.full:
                    generation = None  # maybe more: read on before waiting
        finally:
            self.hub.forget(self)
            self.hub.reads.unwatch(self.watch)

    def _deliver(self, page: Page) -> None:
        for mailbox in list(self.mailboxes):
            if not mailbox.offer(page):
                self.remove(mailbox)
                mailbox.detached = True
                mailbox.wake.set()

    def _end(self, closed: Closed) -> None:
        for mailbox in list(self.mailboxes):
            mailbox.offer(closed)
            self.remove(mailbox)

    def _move(self, at: int) -> bool:
        """Re-key the reader at ``at``; False when another reader is there (this one merged
        its subscribers into it and ends)."""
        if at == self.key.at:
            return True
        self.hub.forget(self)
        self.key = self.key._replace(at=at)
        other = self.hub.readers.get(self.key)
        if other is not None:
            for mailbox in list(self.mailboxes):
                self.remove(mailbox)
                other.add(mailbox)
            return False
        self.hub.readers[self.key] = self
        return True


class Hub:
    """The readers of one process by key, and the subscriptions' shutdown flag."""

    def __init__(self, reads: AsyncReads, *, page_events: int, closing: asyncio.Event) -> None:
        self.reads = reads
        self.page_events = page_events
        self.closing = closing
        self.readers: dict[Key, Reader] = {}
        self.reads_done = 0
        """Index reads made by readers (catch-up reads of subscriptions not counted)."""
        self.reads_failed = 0
        """Reads of readers that failed for a transient reason (and were retried)."""
        self.running = 0
        self.running_peak = 0
        """Most reads of readers that ran at once."""
        self.catchup = asyncio.Semaphore(CATCHUP_READS)
        self.reading = asyncio.Semaphore(HUB_READS)
        self._logged_at = -RETRY_LOG_INTERVAL

    async def read(self, key: Key) -> Page:
        """One read of a reader (counted)."""
        self.running += 1
        self.running_peak = max(self.running_peak, self.running)
        try:
            page = await read_page(self.reads, key, self.page_events)
        finally:
            self.running -= 1
        self.reads_done += 1
        metrics.SSE_READS.inc()
        return page

    def read_failed(self, key: Key, error: Unavailable) -> None:
        self.reads_failed += 1
        now = asyncio.get_running_loop().time()
        if now - self._logged_at >= RETRY_LOG_INTERVAL:
            self._logged_at = now
            logger.warning(
                "live subscriptions: a read of %s %r failed (%s); retrying (%d failed so far)",
                key.kind,
                key.name,
                error,
                self.reads_failed,
            )

    async def pause(self, delay: float, emptied: asyncio.Event) -> None:
        """Sleep ``delay`` seconds, less at shutdown or when ``emptied`` is set."""
        stops = [asyncio.ensure_future(e.wait()) for e in (self.closing, emptied)]
        try:
            await asyncio.wait(stops, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in stops:
                task.cancel()

    def join(self, key: Key, mailbox: Mailbox, generation: int) -> None:
        """Attach ``mailbox`` to the reader of ``key`` (started, waiting on ``generation``,
        when there is none)."""
        reader = self.readers.get(key)
        if reader is None:
            reader = self.readers[key] = Reader(self, key, generation)
        mailbox.detached = False
        reader.add(mailbox)

    def leave(self, mailbox: Mailbox) -> None:
        if mailbox.reader is not None:
            mailbox.reader.remove(mailbox)

    def forget(self, reader: Reader) -> None:
        if self.readers.get(reader.key) is reader:
            del self.readers[reader.key]

    def subscribers(self) -> int:
        return sum(len(r.mailboxes) for r in self.readers.values())

    async def wait(self, watch: Watch, generation: int, emptied: asyncio.Event) -> None:
        """Until an index commit after ``generation`` that may concern ``watch``, shutdown,
        ``emptied`` or :data:`READER_WAIT`."""
        notified = asyncio.ensure_future(watch.wait(generation, READER_WAIT))
        stops = [asyncio.ensure_future(e.wait()) for e in (self.closing, emptied)]
        try:
            await asyncio.wait({notified, *stops}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (notified, *stops):
                task.cancel()

    async def close(self) -> None:
        """End every reader (at their next step) and wait for them."""
        self.closing.set()
        tasks = [r.task for r in self.readers.values()]
        for reader in self.readers.values():
            reader.emptied.set()
        if tasks:
            await asyncio.wait(tasks, timeout=READER_WAIT)


async def _visible(page: Page, feed: Feed, allowed: Allowed | None) -> list[bytes]:
    """The messages of ``page`` the subscriber may see; Forbidden on a stream feed whose
    caller lost ``read`` on the stream (its feed ends rather than skipping events)."""
    if allowed is None or not page.messages:
        return [m for _, m in page.messages]
    may = await allowed(list({s for s, _ in page.messages}))
    _require_stream_read(feed, may)
    return [m for s, m in page.messages if s in may]


def _require_stream_read(feed: Feed, may: Container[str]) -> None:
    if feed.kind == "stream" and feed.name not in may:
        raise Forbidden()


async def _still_allowed(feed: Feed, allowed: Allowed | None) -> None:
    """At a heartbeat: raise Unauthorized when the token was revoked or expired, Forbidden when
    a stream feed's caller lost ``read`` on the stream (one lookup in the caches of tokens and
    stream ACLs; the right to a category or ``$all`` is the route's, fixed by the settings and
    the caller's roles, which the token check covers)."""
    if allowed is None:
        return
    _require_stream_read(feed, await allowed([feed.name] if feed.kind == "stream" else []))


async def follow(
    hub: Hub,
    feed: Feed,
    *,
    heartbeat: float,
    wake: asyncio.Event,
    stopped: Callable[[], bool],
    allowed: Allowed | None = None,
) -> AsyncGenerator[bytes, None]:
    """One subscription's bytes: catch-up pages read on its own, then the pages of the hub's
    reader of its key, heartbeats between; ends when ``stopped()`` (shutdown, the client left:
    whoever makes it true sets ``wake``) or the stream is deleted. ``allowed`` keeps only the
    events of the streams the subscriber may read, and is asked again at every heartbeat (a
    revoked token ends an idle feed too). Never cancelled in the middle of a read (that would
    leave a pooled connection busy)."""
    reads = hub.reads
    await reads.listen()
    loop = asyncio.get_running_loop()
    key = Key(feed.kind, feed.name, feed.types, feed.start)
    mailbox = Mailbox(wake)
    quiet_since = loop.time()
    # Held for the feed's whole life: the generations it takes are of this watch, also those
    # a reader it starts waits on (Reader holds one of its own).
    watch = reads.watch(feed.kind, feed.name)
    try:
        while not stopped():
            # A reader at this very position delivers everything from here; else catch up on
            # our own (also after being detached) until a page comes back short.
            joined = key in hub.readers
            page: Page | None = None
            if not joined:
                async with hub.catchup:
                    if stopped():
                        return
                    joined = key in hub.readers  # one may have come while we queued
                    if not joined:
                        generation = watch.generation  # before the read: see above
                        with contextlib.suppress(StreamDeleted):
                            page = await read_page(reads, key, hub.page_events)
            if joined:
                hub.join(key, mailbox, watch.generation)
            else:
                if page is None:
                    yield DELETED
                    return
                for chunk in await _visible(page, feed, allowed):
                    yield chunk
                    quiet_since = loop.time()
                key = key._replace(at=page.next)
                if page.full or stopped():
                    continue
                hub.join(key, mailbox, generation)  # at the head: its reader delivers from here
            while not stopped():
                item = mailbox.take()
                if item is None:
                    if mailbox.detached:
                        break  # fell behind: page on our own from key.at
                    wake.clear()
                    remaining = heartbeat - (loop.time() - quiet_since)
                    if remaining <= 0:
                        await _still_allowed(feed, allowed)
                        yield HEARTBEAT
                        quiet_since = loop.time()
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), remaining)
                    continue
                if isinstance(item, Closed):
                    if item.error is not None:
                        raise item.error
                    yield item.comment
                    return
                key = key._replace(at=item.next)
                for chunk in await _visible(item, feed, allowed):
                    yield chunk
                    quiet_since = loop.time()
    finally:
        hub.leave(mailbox)
        reads.unwatch(watch)
