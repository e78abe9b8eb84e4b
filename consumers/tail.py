"""``kafkastore tail``: follow committed events live, one line per event, until Ctrl-C.

A line is ``<partition>/<offset> <stream_id> v<version> <type> <data>`` (data as compact JSON,
or ``base64:...`` for binary payloads). Without ``--group`` a throw-away group is used and the
tail starts at the end of the topic (``--from-beginning`` to replay); with ``--group`` the
group's committed position is used.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from dataclasses import dataclass
from typing import TextIO

import orjson

from consumers.subscription import Subscription
from kafkastore.config import Settings
from kafkastore.records import RecordedEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class TailOptions:
    """What one ``kafkastore tail`` asks for."""

    group: str | None = None
    """The consumer group; None: a throw-away group of this tail."""
    from_beginning: bool = False
    """Without a committed position, start at the topic's beginning instead of its end."""
    categories: tuple[str, ...] | None = None
    """Only events of these categories; None: every category."""
    types: tuple[str, ...] | None = None
    """Only events of these types; None: every type."""


def format_event(event: RecordedEvent) -> str:
    if event.is_json and not isinstance(event.data, bytes):
        data = orjson.dumps(event.data).decode()
    else:
        data = "base64:" + base64.b64encode(event.raw).decode()
    return (
        f"{event.partition}/{event.offset} {event.stream_id} v{event.version} {event.type} {data}"
    )


def run(options: TailOptions, settings: Settings, out: TextIO) -> int:
    group = options.group or f"kafkastore-tail-{uuid.uuid4().hex[:12]}"

    def show(event: RecordedEvent) -> None:
        out.write(format_event(event) + "\n")
        out.flush()

    subscription = Subscription(
        group,
        show,
        categories=options.categories,
        event_types=options.types,
        from_beginning=options.from_beginning,
        settings=settings,
        # Printing cannot fail in a way a retry fixes; a broken pipe ends the tail.
        dead_letter=False,
    )
    # Ctrl-C and a closed pipe (``kafkastore tail | head``) are how a tail ends.
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        subscription.run()
    return 0
