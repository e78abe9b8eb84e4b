"""Live subscriptions over HTTP: Server-Sent Events (docs/http.md "Live subscriptions over HTTP").

``GET /subscribe/all``, ``/subscribe/categories/{category}`` and ``/subscribe/streams/{id}``
answer ``text/event-stream``: one message per event, ``id:`` its global position (its version
for a stream), ``data:`` the event's JSON exactly as reads return it, no ``event:`` field.

How a feed runs (:mod:`indexer.sse_hub`): it catches up by paging the index with the same read
functions as ``GET /all``, ``/categories`` and ``/streams``, so it never shows a phantom nor an
event those reads hide; at the head it joins the process's hub, where one reader per feed key
reads the index once per index commit (woken by ``LISTEN/NOTIFY``, nothing polled) for all
its subscribers. With no event for ``sse_heartbeat`` seconds a feed sends a comment line.

Access (docs/http.md "Security"): the route is authorised like the read it follows (the access
table of :mod:`kafkastore.auth_http`), and every event a feed sends first passes
:func:`kafkastore.auth_http.stream_filter` for the subscriber: an event of a stream the caller
may not read is never streamed on a category or ``$all`` feed, and a token that was revoked or
expired ends the feed, as does a stream feed's caller losing ``read`` on the stream: checked
with every page and at every heartbeat (:func:`indexer.sse_hub.follow`), so an idle feed ends
too.

Bounds: at most ``sse_max_subscribers`` feeds per process (beyond it 503 with ``Retry-After``);
a connection holds at most its mailbox at the hub (a few pages, shared with the other
subscribers) or one page of its own, plus the socket's buffer: a send that makes no progress
for ``sse_send_timeout`` seconds disconnects the client, with a log line, rather than buffering
for it. On SIGTERM/SIGINT every feed ends its response cleanly (a browser's EventSource then
reconnects with ``Last-Event-ID``, to whichever process answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from indexer.reads import AsyncReads
from indexer.sse_hub import Feed, Hub, follow
from kafkastore import apidoc, apirules, auth_http
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, Unavailable
from kafkastore.signals import stop_signals
from kafkastore.streams import MAX_POSITION, MAX_POSITION_DIGITS, check_stream_id

logger = logging.getLogger("kafkastore.sse")

router = APIRouter(tags=["subscriptions"])

EVENT_STREAM = "text/event-stream"
LEAVE_TIMEOUT = 30.0
"""How long a feed whose client left may take to finish its read before it is cancelled."""
RETRY_MS = 1000
"""``retry:`` sent first: how long a browser waits before it reconnects."""
_LAST_EVENT_ID = re.compile(rf"[0-9]{{1,{MAX_POSITION_DIGITS}}}")
"""A resumable id: at most 15 ASCII digits (a version or global position)."""


class Subscribers:
    """The feeds of one process: a count under a limit, the shutdown flag they watch, and the
    hub that serves them at the head (:mod:`indexer.sse_hub`)."""

    def __init__(self, limit: int, reads: AsyncReads, settings: Settings) -> None:
        self.limit = limit
        self.closing = asyncio.Event()
        self.hub = Hub(reads, page_events=settings.sse_page_events, closing=self.closing)
        self.wakes: set[asyncio.Event] = set()
        """One per admitted feed: set to make it look at its stop conditions."""

    @property
    def active(self) -> int:
        return len(self.wakes)

    @contextlib.contextmanager
    def admit(self) -> Iterator[asyncio.Event]:
        """Count one feed for the block (its wake-up event); Unavailable (503) when the limit
        is reached."""
        if self.closing.is_set():
            raise Unavailable("the server is shutting down", retry_after=1.0)
        if self.active >= self.limit:
            raise Unavailable(
                f"too many live subscriptions on this process ({self.limit})", retry_after=5.0
            )
        wake = asyncio.Event()
        self.wakes.add(wake)
        try:
            yield wake
        finally:
            self.wakes.discard(wake)

    def close(self) -> None:
        """Shutdown: every feed ends at its next step, the hub's readers too."""
        self.closing.set()
        for wake in self.wakes:
            wake.set()

    @contextlib.contextmanager
    def closing_on_stop(self) -> Iterator[None]:
        """Inside the block, SIGTERM/SIGINT first end every feed, then go on to the handler that
        was installed before (the HTTP server's own, which then drains connections)."""
        import signal

        loop = asyncio.get_running_loop()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def on_stop(signum: int) -> None:
            loop.call_soon_threadsafe(self.close)
            handler = previous.get(signal.Signals(signum))
            if callable(handler):
                handler(signum, None)

        with stop_signals(on_stop):
            yield


class EventStream(Response):
    """An ASGI response that sends ``chunks`` as ``text/event-stream``; every send must make
    progress within ``send_timeout`` seconds or the client is cut off (logged)."""

    media_type = EVENT_STREAM

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        *,
        leave: Callable[[], None],
        send_timeout: float,
        peer: str,
    ) -> None:
        # Not Response.__init__: that would add a Content-Length.
        self.status_code = 200
        self.background = None
        self.chunks = chunks
        self.leave = leave
        """Called when the client disconnects; ``chunks`` must end soon after."""
        self.left = False
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
                self.left = True
                self.leave()  # the feed ends at its next step, not in a read
                await asyncio.wait({pump}, timeout=LEAVE_TIMEOUT)
        finally:
            for task in (pump, gone):
                task.cancel()
            await asyncio.wait({pump, gone})
            await self.chunks.aclose()
        if pump.cancelled() or self.left:
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
    """The type filter as a feed key: sorted, without repeats (``?type=B&type=A`` and
    ``?type=A&type=B`` share a reader)."""
    if types and any(not t for t in types):
        raise InvalidRequest("type must not be empty", fields=["type"])
    return tuple(sorted(set(types))) if types else None


async def _subscribe(request: Request, feed: Feed) -> EventStream:
    app = request.app
    subscribers: Subscribers = app.state.subscribers
    settings: Settings = app.state.settings
    if not 1 <= feed.start <= MAX_POSITION:
        raise InvalidRequest(
            f"the start position must be 1-{MAX_POSITION}", fields=["from_position"]
        )
    admission = subscribers.admit()
    wake = admission.__enter__()
    left: list[bool] = []

    def leave() -> None:
        left.append(True)
        wake.set()

    async def counted() -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in follow(
                subscribers.hub,
                feed,
                heartbeat=settings.sse_heartbeat,
                wake=wake,
                stopped=lambda: bool(left) or subscribers.closing.is_set(),
                allowed=auth_http.stream_filter(request),
            ):
                yield chunk
        finally:
            admission.__exit__(None, None, None)

    peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
    return EventStream(counted(), leave=leave, send_timeout=settings.sse_send_timeout, peer=peer)


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
