"""``kafkastore read STREAM``: one page of a stream as JSON lines (one event per line).

Reads PostgreSQL directly (the same :class:`~indexer.reads.Reads` the Python API uses), or a
running HTTP API with ``--api URL``.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from typing import Any, TextIO
from urllib.parse import quote, urlencode

import orjson

from indexer import render
from indexer.reads import Direction, Reads
from kafkastore.config import Settings
from kafkastore.errors import InvalidRequest, StreamNotFound, Unavailable


def read(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    direction: Direction = "backward" if args.backward else "forward"
    if args.api:
        events = _read_http(args, direction)
        for event in events:
            out.write(orjson.dumps(event).decode() + "\n")
        return 0
    with Reads.open(settings, max_size=1) as reads:
        page = reads.read_stream(
            args.stream_id, from_version=args.from_version, limit=args.limit, direction=direction
        )
    for e in page.events:
        out.write(orjson.dumps(render.event_json(e)).decode() + "\n")
    return 0


def _read_http(args: argparse.Namespace, direction: str) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": args.limit, "direction": direction}
    if args.from_version is not None:
        params["from_version"] = args.from_version
    url = f"{args.api.rstrip('/')}/streams/{quote(args.stream_id, safe='')}?{urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30.0) as response:
            body = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        message = orjson.loads(text).get("message", "") if text.startswith(b"{") else ""
        if exc.code == 404:
            raise StreamNotFound(args.stream_id) from exc
        if exc.code == 400:
            raise InvalidRequest(message or "invalid request") from exc
        raise Unavailable(f"{url} answered {exc.code}: {message}") from exc
    except OSError as exc:
        raise Unavailable(f"cannot reach {args.api}: {exc}") from exc
    events: list[dict[str, Any]] = body["events"]
    return events
