"""Live subscriptions over HTTP: Server-Sent Events (docs/http.md "Live subscriptions over HTTP").

``GET /subscribe/all``, ``/subscribe/categories/{category}`` and ``/subscribe/streams/{id}``
answer ``text/event-stream``: one message per event, ``id:`` its global position (its version
for a stream), ``data:`` the event's JSON exactly as reads return it, no ``event:`` field.

How a feed runs: it pages the index with the same read functions as ``GET /all``,
``/categories`` and ``/streams`` (:class:`~indexer.reads.AsyncReads`), so it never shows a
phantom (only the indexer writes ``events``, and only real events) nor an event those reads hide.
Global positions are gap-free and handed out in commit order, so paging by ``next_position``
never skips an event that commits later with a lower position; a stream pages by version. When
a page comes back short the feed takes the listener's generation *before* that read and waits
on it (:mod:`indexer.notify`): any index commit after the read wakes it, so nothing is polled and
no wake-up is lost. With no event for ``sse_heartbeat`` seconds it sends a comment line.

Bounds: at most ``sse_max_subscribers`` feeds per process (beyond it 503 with ``Retry-After``);
a connection holds one page (``sse_page_events`` events) plus the socket's buffer: a send that
makes no progress for ``sse_send_timeout`` seconds disconnects the client, with a log line,
rather than buffering for it. On SIGTERM/SIGINT every feed ends its response cleanly (a browser's
EventSource then reconnects with ``Last-Event-ID``, to whichever process answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from indexer import render
from indexer.reads import AsyncReads
from kafkastore import apidoc, apirules
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, StreamDeleted, StreamNotFound, Unavailable
from kafkastore.records import RecordedEvent
from kafkastore.signals import stop_signals
from kafkastore.streams import MAX_POSITION, MAX_POSITION_DIGITS, check_stream_id

logger = logging.getLogger("kafkastore.sse")

router = APIRouter(tags=["subscriptions"])

EVENT_STREAM = "text/event-stream"
HEARTBEAT = b": heartbeat\n\n"
LEAVE_TIMEOUT = 30.0
"""How long a feed whose client left may take to finish its read before it is cancelled."""
RETRY_MS = 1000
_LAST_EVENT_ID = re.compile(rf"[0-9]{{1,{MAX_POSITION_DIGITS}}}")
"""A resumable id: at most 15 ASCII digits (a version or global position)."""
"""``retry:`` sent first: how long a browser waits before it reconnects."""


class Subscribers:
    """The feeds of one process: a count under a limit, and the shutdown flag they watch."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.closing = asyncio.Event()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Count one feed for the block; Unavailable (503) when the limit is reached."""
        if self.closing.is_set():
            raise Unavailable("the server is shutting down", retry_after=1.0)
        if self.active >= self.limit:
            raise Unavailable(
                f"too many live subscriptions on this process ({self.limit})", retry_after=5.0
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    @contextlib.contextmanager
    def closing_on_stop(self) -> Iterator[None]:
        """Inside the block, SIGTERM/SIGINT first end every feed, then go on to the handler that
        was installed before (the HTTP server's own, which then drains connections)."""
        import signal

        loop = asyncio.get_running_loop()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def on_stop(signum: int) -> None:
            loop.call_soon_threadsafe(self.closing.set)
            handler = previous.get(signal.Signals(signum))
            if callable(handler):
                handler(signum, None)

        with stop_signals(on_stop):
            yield


@dataclass(frozen=True, slots=True)
class Feed:
    """What one subscription follows: ``kind`` is "all", "category" or "stream"."""

    kind: str
    name: str
    start: int
    """The first global position (or version, for a stream) to send."""
    types: tuple[str, ...] | None


def message(feed_id: int, event: RecordedEvent) -> bytes:
    """One SSE message: ``id:`` then ``data:`` (orjson output has no newline)."""
    return b"id: %d\ndata: %s\n\n" % (feed_id, orjson.dumps(render.event_json(event)))


async def _page(reads: AsyncReads, feed: Feed, at: int, limit: int) -> tuple[list[bytes], int]:
    """The messages of one page from ``at`` and where the next page starts."""
    if feed.kind == "stream":
        try:
            page = await reads.read_stream(feed.name, from_version=at, limit=limit)
        except StreamNotFound:
            return [], at  # not created yet: wait for it
        wanted = set(feed.types) if feed.types else None
        out = [message(e.version, e) for e in page.events if wanted is None or e.type in wanted]
        return out, (page.events[-1].version + 1 if page.events else at)
    if feed.kind == "category":
        cpage = await reads.read_category(
            feed.name, from_position=at, limit=limit, types=feed.types
        )
    else:
        cpage = await reads.read_all(from_position=at, limit=limit, types=feed.types)
    return [message(e.global_position or 0, e) for e in cpage.events], cpage.next_position or at


async def messages(
    reads: AsyncReads, feed: Feed, settings: Settings, stops: tuple[asyncio.Event, ...]
) -> AsyncGenerator[bytes, None]:
    """The feed's bytes: catch-up pages, then live pages as the index grows, heartbeats between;
    ends when one of ``stops`` is set (shutdown, the client left) or the stream is deleted.
    Never cancelled in the middle of a read (that would leave a pooled connection busy)."""
    await reads.listen()
    at = feed.start
    idle = 0.0
    loop = asyncio.get_running_loop()
    while not any(stop.is_set() for stop in stops):
        generation = reads.index_generation  # before the read: see the module docstring
        try:
            out, at = await _page(reads, feed, at, settings.sse_page_events)
        except StreamDeleted:
            yield b": stream deleted\n\n"
            return
        for chunk in out:
            yield chunk
        if out:
            idle = 0.0
            continue  # maybe more: read on before waiting
        started = loop.time()
        waited = await _wait(reads, generation, settings.sse_heartbeat - idle, stops)
        idle += loop.time() - started
        if not waited and idle >= settings.sse_heartbeat:
            yield HEARTBEAT
            idle = 0.0


async def _wait(
    reads: AsyncReads, generation: int, timeout: float, stops: tuple[asyncio.Event, ...]
) -> bool:
    """Wait for an index commit after ``generation``, a stop or ``timeout``; whether the
    generation moved."""
    notified = asyncio.ensure_future(reads.wait_for_index(generation, max(timeout, 0.0)))
    waits = [asyncio.ensure_future(stop.wait()) for stop in stops]
    try:
        await asyncio.wait({notified, *waits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (notified, *waits):
            task.cancel()
    return notified.done() and not notified.cancelled() and notified.result() != generation


class EventStream(Response):
    """An ASGI response that sends ``chunks`` as ``text/event-stream``; every send must make
    progress within ``send_timeout`` seconds or the client is cut off (logged)."""

    media_type = EVENT_STREAM

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        *,
        left: asyncio.Event,
        send_timeout: float,
        peer: str,
    ) -> None:
        # Not Response.__init__: that would add a Content-Length.
        self.status_code = 200
        self.background = None
        self.chunks = chunks
        self.left = left
        """Set when the client disconnects; ``chunks`` must end soon after."""
        self.send_timeout = send_timeout
        self.peer = peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                self.left.set()  # the feed ends at its next step, not in a read
                await asyncio.wait({pump}, timeout=LEAVE_TIMEOUT)
        finally:
            for task in (pump, gone):
                task.cancel()
            await asyncio.wait({pump, gone})
            await self.chunks.aclose()
        if pump.cancelled() or self.left.is_set():
            return  # the client went away
        error = pump.exception()
        if error is not None:
            logger.warning("SSE subscription of %s ended: %s", self.peer, error)
        elif not pump.result():
            return  # cut off: the server closes the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> bool:
        """Send every chunk; False when the client was too slow and was cut off."""
        if not await self._send(send, b"retry: %d\n\n" % RETRY_MS):
            return False
        async for chunk in self.chunks:
            if not await self._send(send, chunk):
                return False
        return True

    async def _send(self, send: Send, chunk: bytes) -> bool:
        try:
            await asyncio.wait_for(
                send({"type": "http.response.body", "body": chunk, "more_body": True}),
                self.send_timeout,
            )
        except TimeoutError:
            logger.warning(
                "SSE subscriber %s disconnected: it accepted no data for %.1f s (too slow)",
                self.peer,
                self.send_timeout,
            )
            return False
        return True


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _resume(last_event_id: str | None, start: int) -> int:
    """Where a feed starts: right after ``Last-Event-ID`` when given, else ``start``."""
    if last_event_id is None or not last_event_id.strip():
        return start
    if last_event_id.strip().startswith("-"):
        raise InvalidRequest("Last-Event-ID must not be negative", fields=["Last-Event-ID"])
    if not _LAST_EVENT_ID.fullmatch(last_event_id.strip()):
        raise InvalidRequest("Last-Event-ID must be an integer", fields=["Last-Event-ID"])
    return int(last_event_id.strip()) + 1


def _types(types: list[str] | None) -> tuple[str, ...] | None:
    if types and any(not t for t in types):
        raise InvalidRequest("type must not be empty", fields=["type"])
    return tuple(types) if types else None


async def _subscribe(request: Request, feed: Feed) -> EventStream:
    app = request.app
    subscribers: Subscribers = app.state.subscribers
    settings: Settings = app.state.settings
    reads: AsyncReads = app.state.reads
    if not 1 <= feed.start <= MAX_POSITION:
        raise InvalidRequest(
            f"the start position must be 1-{MAX_POSITION}", fields=["from_position"]
        )
    admission = subscribers.admit()
    admission.__enter__()
    left = asyncio.Event()

    async def counted() -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in messages(reads, feed, settings, (subscribers.closing, left)):
                yield chunk
        finally:
            admission.__exit__(None, None, None)

    peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
    return EventStream(counted(), left=left, send_timeout=settings.sse_send_timeout, peer=peer)


SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: apidoc.media(
        "A stream of Server-Sent Events: one message per event, `id:` its position, `data:` the "
        "event's JSON as reads return it; a `: heartbeat` comment on an idle feed.",
        EVENT_STREAM,
    ),
    **apidoc.errors(
        400,
        503,
        text={
            400: "invalid_request: a bad from_position/from_version or stream id, an empty "
            "type, a Last-Event-ID that is not a non-negative integer, or unknown query "
            "parameters",
            503: "unavailable: too many live subscriptions on this process, or shutting down; "
            "retry after Retry-After seconds",
        },
    ),
}

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="resume right after this id (a non-negative integer)",
        json_schema_extra={"pattern": rf"^\s*([0-9]{{1,{MAX_POSITION_DIGITS}}}\s*)?$"},
    ),
]
Types = apirules.Types
FromPosition = Annotated[int, Query(json_schema_extra=apirules.at_least(1))]


@router.get(
    "/subscribe/all",
    summary="Follow $all live (catch-up, then live)",
    response_class=Response,  # an EventStream; errors are JSON
    status_code=200,
    responses=SSE_RESPONSES,
)
async def subscribe_all(
    request: Request,
    from_position: FromPosition = 1,
    type: Types = None,
    last_event_id: LastEventId = None,
) -> EventStream:
    """Every event from ``from_position`` in global-position order, then new ones as they are
    indexed; ``type`` (repeatable) keeps only those types. ``Last-Event-ID`` resumes after it."""
    start = _resume(last_event_id, from_position)
    return await _subscribe(request, Feed("all", "$all", start, _types(type)))


@router.get(
    "/subscribe/categories/{category}",
    summary="Follow a category live",
    response_class=Response,  # an EventStream; errors are JSON
    status_code=200,
    responses=SSE_RESPONSES,
)
async def subscribe_category(
    request: Request,
    category: apirules.CategoryPath,
    from_position: FromPosition = 1,
    type: Types = None,
    last_event_id: LastEventId = None,
) -> EventStream:
    """The category's events from ``from_position`` (global positions), then live."""
    start = _resume(last_event_id, from_position)
    return await _subscribe(request, Feed("category", category, start, _types(type)))


@router.get(
    "/subscribe/streams/{stream_id:path}",
    summary="Follow one stream live",
    response_class=Response,  # an EventStream; errors are JSON
    status_code=200,
    responses=SSE_RESPONSES,
)
async def subscribe_stream(
    request: Request,
    stream_id: apirules.StreamIdPath,
    from_version: Annotated[int, Query(json_schema_extra=apirules.at_least(1))] = 1,
    type: Types = None,
    last_event_id: LastEventId = None,
) -> EventStream:
    """The stream's events from ``from_version``, then live; ``id:`` is the version. A stream
    that does not exist yet is waited for; a deleted one ends the response. A bad stream id is
    refused (400) before the feed starts."""
    check_stream_id(stream_id)
    start = _resume(last_event_id, from_version)
    return await _subscribe(request, Feed("stream", stream_id, start, _types(type)))
