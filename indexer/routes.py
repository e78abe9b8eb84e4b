"""Read routes of the HTTP API (docs/http.md "Read one stream", "Other reads").

Handlers use the :class:`~indexer.reads.AsyncReads` of the app (``request.app.state.reads``).
Lifespan contract for the app that mounts :data:`router`::

    app.state.reads = await AsyncReads.open(settings)   # at startup
    await app.state.reads.close()                       # at shutdown

Bodies are built with orjson into plain :class:`Response` objects (FastAPI's response models
re-validate every field, which costs more than the query on hot paths). Our errors propagate to
the app's one error table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request, Response

from indexer import render
from indexer.reads import AsyncReads, Direction
from kafkastore import apidoc, auth_http
from kafkastore.errors import InvalidRequest

router = APIRouter(tags=["reads"])

JSON = "application/json"


def _reads(request: Request) -> AsyncReads:
    reads: AsyncReads = request.app.state.reads
    return reads


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


# Stream ids may contain "/" (a path parameter), so the state route is declared first: for
# "/streams/a/b/state" it answers the state of "a/b".
@router.get(
    "/streams/{stream_id:path}/state",
    summary="A stream's head and indexed version",
    response_model=apidoc.StreamState,
    responses=apidoc.errors(400, 404, 503),
)
async def stream_state(request: Request, stream_id: str) -> Response:
    """The writer-side head (``version``, current as soon as an append is acknowledged) and how
    far the index caught up (``indexed_version``)."""
    state = await _reads(request).stream_state(stream_id)
    return Response(render.stream_state_json(state), media_type=JSON)


@router.get(
    "/streams/{stream_id:path}/metadata",
    tags=["lifecycle"],
    summary="A stream's metadata (also before it has events)",
    response_model=apidoc.MetadataBody,
    response_description="the metadata (metadata_version 0: never set)",
    responses=apidoc.errors(
        400, 410, 503, text={410: "stream_deleted: the stream was hard-deleted"}
    ),
)
async def get_metadata(request: Request, stream_id: str) -> Response:
    metadata = await _reads(request).get_metadata(stream_id)
    return Response(orjson.dumps(metadata.to_json()), media_type=JSON)


@router.get(
    "/streams/{stream_id:path}/snapshots/latest",
    tags=["lifecycle"],
    summary="A stream's latest snapshot",
    response_model=apidoc.SnapshotBody,
    response_description="the snapshot of the highest version",
    responses=apidoc.errors(
        400,
        404,
        410,
        503,
        text={
            404: "snapshot_not_found: the stream has no snapshot (stream_id)",
            410: "stream_deleted: the stream was hard-deleted",
        },
    ),
)
async def latest_snapshot(request: Request, stream_id: str) -> Response:
    snapshot = await _reads(request).latest_snapshot(stream_id)
    return Response(orjson.dumps(render.snapshot_json(snapshot)), media_type=JSON)


def _types(request: Request) -> list[str] | None:
    types = request.query_params.getlist("type")
    if any(not t for t in types):
        raise InvalidRequest("type must not be empty", fields=["type"])
    return types or None


@router.get(
    "/streams/{stream_id:path}",
    summary="Read one stream",
    response_model=apidoc.StreamPage,
    responses={
        200: apidoc.ok(
            apidoc.StreamPage,
            "a page of the stream",
            etag=apidoc.ETAG,
            behind=apidoc.INDEX_BEHIND,
        ),
        304: apidoc.NOT_MODIFIED,
        **apidoc.errors(400, 404, 410, 503),
    },
)
async def read_stream(  # noqa: PLR0917 - FastAPI passes query parameters by name
    request: Request,
    stream_id: str,
    from_version: int | None = None,
    limit: int | None = None,
    direction: Direction = "forward",
    min_version: int | None = None,
    timeout_ms: int | None = None,
    if_none_match: Annotated[
        str | None,
        Header(description="the ETag of an earlier answer: 304 (no body) when unchanged"),
    ] = None,
) -> Response:
    """A page of the stream's events in version order (``direction=backward`` goes down from
    ``from_version``, default the head). ``min_version`` waits up to ``timeout_ms`` until the
    index holds that version; on time-out the answer carries ``X-Index-Behind: true``. Every
    answer has an ``ETag``; ``If-None-Match`` with it answers ``304`` while the page is the
    same."""
    page = await _reads(request).read_stream(
        stream_id,
        from_version=from_version,
        limit=limit,
        direction=direction,
        min_version=min_version,
        timeout=None if timeout_ms is None else timeout_ms / 1000.0,
    )
    body = render.stream_page_json(page)
    headers = {"ETag": _etag(body)}
    if page.index_behind:
        headers["X-Index-Behind"] = "true"
    if _matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=JSON, headers=headers)


# A category may contain "/" (stream ids may), hence a path parameter.
@router.get(
    "/categories/{category:path}",
    summary="Read a category in global-position order",
    response_model=apidoc.PositionPage,
    responses=apidoc.errors(400, 503),
)
async def read_category(
    request: Request,
    category: str,
    from_position: int = 1,
    limit: int | None = None,
    type: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """Events of every stream of the category (stream id up to the first ``-``); ``type``
    (repeatable) keeps only those types. ``next_position`` is where the next page starts: after
    a page shorter than ``limit``, past everything scanned (a filtered tail moves on). With auth
    on, the events of a stream whose own ACL denies the caller ``read`` are left out (the page
    may then hold fewer events; ``next_position`` still moves past them)."""
    page = await _reads(request).read_category(
        category, from_position=from_position, limit=limit, types=_types(request)
    )
    readable = await auth_http.readable_streams(request, (e.stream_id for e in page.events))
    if not all(e.stream_id in readable for e in page.events):
        kept = tuple(e for e in page.events if e.stream_id in readable)
        page = dataclasses.replace(page, events=kept)
    return Response(render.position_page_json(page), media_type=JSON)


@router.get(
    "/all",
    summary="Read $all in global-position order",
    response_model=apidoc.PositionPage,
    responses=apidoc.errors(400, 503),
)
async def read_all(
    request: Request,
    from_position: int = 1,
    limit: int | None = None,
    type: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """Every event in index order (gap-free global positions, handed out in commit order);
    ``type`` (repeatable) keeps only those types. ``next_position`` as for categories."""
    page = await _reads(request).read_all(
        from_position=from_position, limit=limit, types=_types(request)
    )
    return Response(render.position_page_json(page), media_type=JSON)
