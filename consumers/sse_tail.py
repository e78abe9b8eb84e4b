"""``kafkastore tail --api URL``: follow the HTTP API's Server-Sent Events feed.

One category follows ``/subscribe/categories/{c}``; none or several follow ``/subscribe/all``
(several are kept here, by category). ``--type`` is sent as the feed's ``type`` filter. Without
``--from-beginning`` the tail starts after the last indexed event: the ``next_position`` of a
read of the feed's route (``GET /all`` or ``/categories/{c}``: the same right as the feed) that
matches no event, which is past the index's head (:func:`end_position`; holes that hidden or
scavenged events leave in positions do not matter). A dropped connection is reopened with
``Last-Event-ID``, so no event is shown twice or skipped. Lines are those of the Kafka mode
(:mod:`consumers.tail`). With ``--token`` (or ``KAFKASTORE_TOKEN``) every request carries it as
a bearer token; a 401 or 403 ends the tail with our error (exit 5) instead of reconnecting.
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


END_PROBE_TYPE = "$kafkastore-tail-end"
"""The type filter of the reads that find the end: an event type nobody uses (one that some
event has only costs more pages)."""
END_PROBE_LIMIT = 100


def end_position(api: str, token: str = "", categories: tuple[str, ...] | None = None) -> int:
    """The position after the last indexed event (1 when the index is empty).

    A position read answers ``next_position`` past the index's head when its page is shorter
    than its limit (docs/http.md, ``GET /categories``): filtered to a type no event has, the
    first page is (one request), and pages of events of that type are paged through. The read
    is of the feed's route (a category's for one category): it needs the feed's right only.
    """
    path = (
        f"/categories/{quote(categories[0], safe='')}"
        if categories and len(categories) == 1
        else "/all"
    )
    position = 1
    while True:
        query = urlencode(
            {"from_position": position, "limit": END_PROBE_LIMIT, "type": END_PROBE_TYPE}
        )
        page = _get_json(f"{api}{path}?{query}", token)
        position = int(page["next_position"])
        if len(page["events"]) < END_PROBE_LIMIT:
            return position


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
        last_id = 0 if from_beginning else end_position(api, token, categories) - 1
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
