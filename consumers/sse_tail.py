"""``kafkastore tail --api URL``: follow the HTTP API's Server-Sent Events feed.

One category follows ``/subscribe/categories/{c}``; none or several follow ``/subscribe/all``
(several are kept here, by category). ``--type`` is sent as the feed's ``type`` filter. Without
``--from-beginning`` the tail starts after the last indexed event (found by probing ``GET /all``,
whose positions are gap-free). A dropped connection is reopened with ``Last-Event-ID``, so no
event is shown twice or skipped. Lines are those of the Kafka mode (:mod:`consumers.tail`).
With ``--token`` (or ``KAFKASTORE_TOKEN``) every request carries it as a bearer token; a 401 or
403 ends the tail with our error (exit 5) instead of reconnecting.
"""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import quote, urlencode

import orjson

from kafkastore import auth
from kafkastore.retry import Backoff
from kafkastore.streams import category_of

logger = logging.getLogger("kafkastore.consumers")

RECONNECT = Backoff(initial=0.5, maximum=10.0)
"""Delays between attempts to reopen a dropped feed."""
READ_TIMEOUT = 60.0
"""A feed silent this long (no event, no heartbeat) is reopened."""


def _open(url: str, token: str, timeout: float, **headers: str) -> Any:
    """``urlopen`` with the bearer token; a 401/403 becomes our error (no retry helps)."""
    request = urllib.request.Request(url, headers={**headers, **auth.authorization(token)})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        refused = auth.refusal(exc.code, url.partition("?")[0], token)
        if refused is not None:
            raise refused from None
        raise


def _get_json(url: str, token: str = "") -> Any:
    with _open(url, token, 30) as response:
        return orjson.loads(response.read())


def last_position(api: str, token: str = "") -> int:
    """The highest global position in ``$all`` (0 when empty): gallop, then bisect."""

    def exists(position: int) -> bool:
        query = urlencode({"from_position": position, "limit": 1})
        page = _get_json(f"{api}/all?{query}", token)
        return bool(page["events"]) and page["events"][0]["global_position"] == position

    if not exists(1):
        return 0
    low, high = 1, 2
    while exists(high):
        low, high = high, high * 2
    while high - low > 1:  # exists(low), not exists(high)
        middle = (low + high) // 2
        low, high = (middle, high) if exists(middle) else (low, middle)
    return low


def feed_url(api: str, categories: tuple[str, ...] | None, types: tuple[str, ...] | None) -> str:
    """The SSE route for these filters."""
    query = urlencode([("type", t) for t in types or ()])
    path = (
        f"/subscribe/categories/{quote(categories[0], safe='')}"
        if categories and len(categories) == 1
        else "/subscribe/all"
    )
    return f"{api}{path}" + (f"?{query}" if query else "")


def messages(url: str, last_id: int, token: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(id, event)`` of one connection, resumed after ``last_id``."""
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last_id)}
    with _open(url, token, READ_TIMEOUT, **headers) as response:
        event_id: int | None = None
        for raw in response:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:") and event_id is not None:
                yield event_id, orjson.loads(line[5:].strip())
                event_id = None


def format_json_event(event: dict[str, Any]) -> str:
    """The line of :func:`consumers.tail.format_event`, from an event's JSON."""
    if "data" in event:
        data = orjson.dumps(event["data"]).decode()
    else:
        data = "base64:" + event["data_base64"]
    return (
        f"{event['partition']}/{event['offset']} {event['stream_id']} v{event['version']} "
        f"{event['type']} {data}"
    )


def run(
    api: str,
    out: TextIO,
    *,
    categories: tuple[str, ...] | None = None,
    types: tuple[str, ...] | None = None,
    from_beginning: bool = False,
    token: str = "",
) -> int:
    """Print every event of the feed until Ctrl-C or a closed pipe; a refusal of the token
    (401/403) raises :class:`~kafkastore.errors.Unauthorized` / ``Forbidden``."""
    api = api.rstrip("/")
    url = feed_url(api, categories, types)
    wanted = set(categories) if categories and len(categories) > 1 else None
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        last_id = 0 if from_beginning else last_position(api, token)
        delays = RECONNECT.delays()
        while True:
            try:
                for event_id, event in messages(url, last_id, token):
                    last_id = event_id
                    if wanted is None or category_of(event["stream_id"]) in wanted:
                        out.write(format_json_event(event) + "\n")
                        out.flush()
                    delays = RECONNECT.delays()
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                logger.warning("the feed at %s dropped (%s); reopening", url, exc)
            # Reopen after the last event seen (also after the server closed the feed cleanly).
            time.sleep(next(delays))
    return 0
