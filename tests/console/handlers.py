"""A dead-letter handler the console tests name in ``dlq_handlers`` (it runs in the API)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from kafkastore.records import RecordedEvent


def marker(event_id: object) -> Path:
    """The file :func:`remember` writes for an event."""
    return Path(tempfile.gettempdir()) / f"kafkastore-replayed-{event_id}"


def remember(event: RecordedEvent) -> None:
    """Handle a replayed event by leaving a file named after it."""
    marker(event.id).write_text(f"{event.stream_id} v{event.version} {event.type}\n")
