"""The web console (docs/http.md "Web console"): ``GET /console`` and the JSON it reads.

The page is plain HTML, CSS and JavaScript shipped in the package (``indexer/console/``): no build
step, no CDN. It reads the public API (``/streams``, ``/all``, ``/categories``, ``/subscribe/...``)
and a few routes of its own under ``/console/api/``: an overview (counts, index lag per
partition, rates), the list of streams by prefix, an event by id, and the consumer groups of the
events topic with their lag and dead letters (from Kafka, :mod:`consumers.groups`). Events are
always read through :class:`~indexer.reads.AsyncReads`, so the console shows what reads show.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from consumers import groups as kafka_groups
from consumers import replay
from indexer import metrics, render
from indexer.reads import AsyncReads
from kafkastore import apidoc, apirules, pg
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, NotFound, StreamNotFound
from kafkastore.streams import check_no_nul

router = APIRouter(tags=["console"])

JSON = "application/json"
ASSETS = {"console.css": "text/css", "console.js": "text/javascript", "index.html": "text/html"}

COUNTS = """
SELECT (SELECT last_position FROM index_head),
       (SELECT count(*) FROM streams),
       (SELECT coalesce(sum(to_version - from_version + 1), 0) FROM appends
         WHERE committed_at > now() - interval '60 seconds')
"""
STREAMS = """
SELECT stream_id, category, version, updated_at FROM streams
WHERE stream_id >= %(prefix)s AND stream_id > %(after)s AND starts_with(stream_id, %(prefix)s)
  AND NOT deleted
ORDER BY stream_id LIMIT %(limit)s
"""
STREAMS_BEFORE = """
SELECT stream_id, category, version, updated_at FROM streams
WHERE stream_id >= %(prefix)s AND stream_id < %(before)s AND starts_with(stream_id, %(prefix)s)
  AND NOT deleted
ORDER BY stream_id DESC LIMIT %(limit)s
"""
EVENT_BY_ID = """
SELECT stream_id, from_version + array_position(event_ids, %(id)s) - 1 FROM appends
WHERE event_ids @> ARRAY[%(id)s]::uuid[] LIMIT 1
"""
STREAM_PAGE = 50
NoNul = Annotated[str, Query(json_schema_extra=apirules.NO_NUL)]
GroupPath = Annotated[str, Path(json_schema_extra=apirules.NO_CONTROL)]


def _asset(name: str) -> bytes:
    return (resources.files("indexer") / "console" / name).read_bytes()


def _json(value: Any) -> Response:
    return Response(orjson.dumps(value), media_type=JSON)


async def _fetch(settings: Settings, query: str, params: Any) -> list[Any]:
    conn = await pg.connect_async(settings.database_url, autocommit=True)
    async with conn:
        with pg.translated():
            cur = await conn.execute(query, params)
            return await cur.fetchall()


@router.get(
    "/console",
    summary="The web console (HTML)",
    response_class=Response,
    responses={200: apidoc.media("the console's page", "text/html"), **apidoc.errors(400)},
)
async def console_page() -> Response:
    """The console's single page; it navigates by the URL's fragment (``#/streams`` ...)."""
    return Response(_asset("index.html"), media_type="text/html")


@router.get(
    "/console/assets/{name}",
    summary="The console's CSS and JavaScript",
    response_class=Response,
    responses={
        200: apidoc.media("console.css or console.js", "text/css", "text/javascript"),
        **apidoc.errors(400, 404, text={404: "not_found: no such asset"}),
    },
)
async def console_asset(
    name: Annotated[str, Path(json_schema_extra={"enum": ["console.css", "console.js"]})],
) -> Response:
    if name not in ASSETS or name == "index.html":
        return Response(b'{"error":"not_found","message":"no such asset"}', 404, media_type=JSON)
    return Response(_asset(name), media_type=ASSETS[name])


@router.get(
    "/console/api/overview",
    summary="Counts, index lag per partition, rates",
    response_model=apidoc.Overview,
    responses=apidoc.errors(400, 503),
)
async def overview(request: Request) -> Response:
    """``indexed_events`` (the last global position), ``streams``, ``appended_per_second``
    (the last minute's appended events / 60) and ``index_lag`` per partition (offsets and
    seconds). The console derives the indexer's rate from successive ``indexed_events``."""
    settings: Settings = request.app.state.settings
    ((indexed, streams, last_minute),) = await _fetch(settings, COUNTS, ())
    probe = getattr(request.app.state, "console_lag", None)
    if probe is None:  # one per app, for this app's settings (measured at most every 2 s)
        probe = request.app.state.console_lag = metrics.IndexLagCollector(settings)
    lags = await asyncio.to_thread(probe.lags)
    return _json(
        {
            "topic": settings.topic,
            "indexed_events": int(indexed or 0),
            "streams": int(streams),
            "appended_per_second": round(int(last_minute) / 60.0, 2),
            "index_lag": [
                {"partition": p, "offsets": lag, "seconds": round(age, 3)}
                for p, (lag, age) in sorted(lags.items())
            ],
        }
    )


@router.get(
    "/console/api/streams",
    summary="Streams by prefix, a page at a time",
    response_model=apidoc.StreamList,
    responses=apidoc.errors(
        400, 503, text={400: "invalid_request: limit not 1-500, or unknown query parameters"}
    ),
)
async def streams(
    request: Request,
    prefix: NoNul = "",
    after: NoNul = "",
    before: Annotated[str | None, Query(json_schema_extra=apirules.NO_NUL)] = None,
    limit: Annotated[int, Query(json_schema_extra={"minimum": 1, "maximum": 500})] = 50,
) -> Response:
    """Streams whose id starts with ``prefix`` in id order, after ``after`` (next page) or
    before ``before`` (previous page). ``next``/``previous`` are the cursors, null at the ends."""
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be 1-500", fields=["limit"])
    for name, value in (("prefix", prefix), ("after", after), ("before", before)):
        check_no_nul(value, field=name)
    settings: Settings = request.app.state.settings
    params = {"prefix": prefix, "after": after, "before": before, "limit": limit + 1}
    backward = before is not None
    rows = await _fetch(settings, STREAMS_BEFORE if backward else STREAMS, params)
    more = len(rows) > limit
    rows = rows[:limit]
    if backward:
        rows.reverse()
    items = [
        {"stream_id": s, "category": c, "version": v, "updated_at": u.isoformat()}
        for s, c, v, u in rows
    ]
    first, last = (items[0]["stream_id"], items[-1]["stream_id"]) if items else (None, None)
    return _json(
        {
            "streams": items,
            "next": last if (more or backward) and items else None,
            "previous": first if (after or (backward and more)) and items else None,
        }
    )


@router.get(
    "/console/api/events/{event_id}",
    summary="One event by its id",
    response_model=apidoc.RecordedEvent,
    responses=apidoc.errors(
        400,
        404,
        410,
        503,
        text={
            400: "invalid_request: the event id is not a UUID, or unknown query parameters",
            404: "stream_not_found: no readable event has this id",
            410: "stream_deleted: the event's stream was hard-deleted",
        },
    ),
)
async def event_by_id(
    request: Request, event_id: Annotated[str, Path(json_schema_extra=apirules.UUID)]
) -> Response:
    """The event with this id as reads return it (404 ``stream_not_found`` when unknown)."""
    if not re.fullmatch(apirules.UUID_PATTERN, event_id):
        raise InvalidRequest("the event id must be a UUID", fields=["event_id"])
    wanted = uuid.UUID(event_id)
    settings: Settings = request.app.state.settings
    rows = await _fetch(settings, EVENT_BY_ID, {"id": wanted})
    if not rows:
        raise StreamNotFound(f"event {wanted}")
    stream_id, version = rows[0]
    reads: AsyncReads = request.app.state.reads
    page = await reads.read_stream(stream_id, from_version=int(version), limit=1)
    if not page.events or page.events[0].id != wanted:
        raise StreamNotFound(f"event {wanted}")
    return _json(render.event_json(page.events[0]))


@router.get(
    "/console/api/groups",
    summary="Consumer groups of the events topic, with lag",
    response_model=apidoc.Groups,
    responses=apidoc.errors(400, 503),
)
async def consumer_groups(request: Request) -> Response:
    """Each group with a committed offset on the events topic: state, members and their
    partitions, lag per partition (high watermark - committed offset, from Kafka)."""
    settings: Settings = request.app.state.settings
    return _json({"groups": await asyncio.to_thread(kafka_groups.groups, settings)})


@router.get(
    "/console/api/groups/{group}/dead-letters",
    summary="A group's dead letters",
    response_model=apidoc.DeadLetters,
    responses=apidoc.errors(400, 503),
)
async def group_dead_letters(request: Request, group: GroupPath) -> Response:
    """The group's messages in ``<topic>.dlq``, with the error headers they were parked with."""
    settings: Settings = request.app.state.settings
    letters = await asyncio.to_thread(kafka_groups.dead_letters, settings, group)
    return _json({"group": group, "dead_letters": [letter.json() for letter in letters]})


@router.post(
    "/console/api/groups/{group}/dead-letters/replay",
    summary="Replay a group's dead letters to its handler",
    response_model=apidoc.Replayed,
    responses=apidoc.errors(
        400,
        404,
        500,
        503,
        text={
            404: "not_found: no handler is configured for the group in dlq_handlers",
            500: "configuration: the group's handler in dlq_handlers cannot be loaded",
        },
    ),
)
async def replay_dead_letters(request: Request, group: GroupPath) -> Response:
    """Each dead letter of the group is judged again by the verdict rule, skipped when its
    event is hidden now, and handed at most once to the handler named for the group in
    ``dlq_handlers``, one replay of the group at a time; every step is recorded in
    ``<topic>.dlq.replayed``. ``replayed`` lists each letter's outcome (``handled``,
    ``failed``, ``phantom``, ``pending``, ``hidden``, ``already-replayed``, ``interrupted``)."""
    settings: Settings = request.app.state.settings
    if not settings.dlq_handlers.get(group):
        raise NotFound(
            f"no dead-letter handler is configured for group {group!r}: set "
            f"KAFKASTORE_DLQ_HANDLERS={group}=module:function",
            fields=["group"],
        )
    handler = replay.handler_of(settings, group)
    results = await asyncio.to_thread(replay.replay, settings, group, handler)
    return _json({"group": group, "replayed": [r.json() for r in results]})
