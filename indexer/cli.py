"""``kafkastore read STREAM``: one page of a stream as JSON lines (one event per line).

Reads PostgreSQL directly (the same :class:`~indexer.reads.Reads` the Python API uses), or a
running HTTP API with ``--api URL`` (sending ``--token`` / ``KAFKASTORE_TOKEN`` as a bearer
token when given: an API with auth on refuses reads without one).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote, urlencode

import orjson

from indexer import render
from indexer.reads import Direction, Reads
from kafkastore import auth
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, StreamDeleted, StreamNotFound, Unavailable


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOptions:
    """What one ``kafkastore read`` asks for."""

    stream_id: str
    from_version: int | None = None
    """The page's first version; None: the stream's first (last when ``backward``) version."""
    limit: int = 100
    """Most events of the page."""
    backward: bool = False
    """Newest first."""
    api: str | None = None
    """Base URL of an HTTP API to read through; None: PostgreSQL directly."""
    token: str = ""
    """Bearer token sent to ``api`` (empty: none)."""


def read(options: ReadOptions, settings: Settings, out: TextIO) -> int:
    direction: Direction = "backward" if options.backward else "forward"
    if options.api:
        events = _read_http(options, options.api, direction)
        for event in events:
            out.write(orjson.dumps(event).decode() + "\n")
        return 0
    with Reads.open(settings, max_size=1) as reads:
        page = reads.read_stream(
            options.stream_id,
            from_version=options.from_version,
            limit=options.limit,
            direction=direction,
        )
    for e in page.events:
        out.write(orjson.dumps(render.event_json(e)).decode() + "\n")
    return 0


def _read_http(options: ReadOptions, api: str, direction: str) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": options.limit, "direction": direction}
    if options.from_version is not None:
        params["from_version"] = options.from_version
    stream = quote(options.stream_id, safe="")
    url = f"{api.rstrip('/')}/streams/{stream}?{urlencode(params)}"
    request = urllib.request.Request(url, headers=auth.authorization(options.token))
    try:
        with urllib.request.urlopen(request, timeout=30.0) as response:
            body = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        message = orjson.loads(text).get("message", "") if text.startswith(b"{") else ""
        if exc.code == 404:
            raise StreamNotFound(options.stream_id) from exc
        if exc.code == 410:
            raise StreamDeleted(options.stream_id) from exc
        if exc.code == 400:
            raise InvalidRequest(message or "invalid request") from exc
        raise auth.refusal(exc.code, api, options.token) or Unavailable(
            f"{url} answered {exc.code}: {message}"
        ) from exc
    except OSError as exc:
        raise Unavailable(f"cannot reach {api}: {exc}") from exc
    events: list[dict[str, Any]] = body["events"]
    return events
