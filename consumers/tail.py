"""``kafkastore tail``: follow committed events live, one line per event, until Ctrl-C.

A line is ``<partition>/<offset> <stream_id> v<version> <type> <data>`` (data as compact JSON,
or ``base64:...`` for binary payloads). Without ``--group`` a throw-away group is used and the
tail starts at the end of the topic (``--from-beginning`` to replay); with ``--group`` the
group's committed position is used.
"""

from __future__ import annotations

import argparse
import base64
import logging
import uuid
from typing import TextIO

import orjson

from consumers.subscription import Subscription
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent

logger = logging.getLogger("kafkastore.consumers")


def format_event(event: RecordedEvent) -> str:
    if event.is_json and not isinstance(event.data, bytes):
        data = orjson.dumps(event.data).decode()
    else:
        data = "base64:" + base64.b64encode(event.raw).decode()
    return (
        f"{event.partition}/{event.offset} {event.stream_id} v{event.version} {event.type} {data}"
    )


def run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    group = getattr(args, "group", None)
    from_beginning = bool(getattr(args, "from_beginning", False))
    if not group:
        group = f"kafkastore-tail-{uuid.uuid4().hex[:12]}"

    def show(event: RecordedEvent) -> None:
        out.write(format_event(event) + "\n")
        out.flush()

    subscription = Subscription(
        group,
        show,
        categories=getattr(args, "category", None),
        event_types=getattr(args, "types", None),
        from_beginning=from_beginning,
        settings=settings,
        # Printing cannot fail in a way a retry fixes; a broken pipe ends the tail.
        dead_letter=False,
    )
    try:
        subscription.run()
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 0
    return 0
