"""A small Server-Sent Events reader over httpx for the tests (what a client library does)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass(slots=True)
class Message:
    """One SSE message, or a comment (``comment`` set, no data)."""

    id: str | None = None
    data: str | None = None
    comment: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def event(self) -> dict[str, Any]:
        assert self.data is not None
        value: dict[str, Any] = orjson.loads(self.data)
        return value


def parse(lines: Iterator[str]) -> Iterator[Message]:
    """Messages and comments in the order the server sent them."""
    current = Message()
    for line in lines:
        if line == "":
            if current.data is not None or current.fields:
                yield current
            current = Message()
        elif line.startswith(":"):
            yield Message(comment=line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                current.id = value
            elif name == "data":
                current.data = value if current.data is None else current.data + "\n" + value
            else:
                current.fields[name] = value


@contextlib.contextmanager
def subscribe(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> Iterator[Iterator[Message]]:
    """Open ``url`` as an event stream; yields the iterator of its messages."""
    with (
        httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0)) as client,
        client.stream("GET", url, headers=headers or {}) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield parse(response.iter_lines())


def events(messages: Iterator[Message], count: int) -> list[Message]:
    """The next ``count`` event messages (comments skipped)."""
    out: list[Message] = []
    for message in messages:
        if message.data is not None:
            out.append(message)
            if len(out) == count:
                break
    return out
