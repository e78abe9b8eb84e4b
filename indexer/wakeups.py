"""What an index commit touched, and the per-stream and per-category wake-ups it triggers.

The indexer's ``NOTIFY kafkastore_index`` (:func:`indexer.projection.advance_head`) carries a
payload of :func:`payload`:

- ``<last_position> {"streams": [...]}``: the stream ids whose events the commit indexed;
- ``<last_position> {"categories": [...]}``: their categories, when the streams do not fit;
- ``<last_position>`` alone: anything may have changed (too many categories to list, and what
  indexers before this format sent: an old indexer's notification wakes everybody).

PostgreSQL refuses payloads of 8000 bytes or more; :data:`PAYLOAD_BYTES` keeps well below.

A listener (:mod:`indexer.notify`) hands each notification to its :class:`Watches`: a
:class:`Watch` per stream and per category that somebody follows (a live subscription's feed),
counted by users, and one of everything. A watch's generation moves on whenever a commit may
have touched its key (and at every listener reconnect, when notifications may have been lost);
the one of everything moves on at every commit. Generations are one counter for all watches, so
a generation taken from a watch is never mistaken for a later one of another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from kafkastore.streams import category_of

PAYLOAD_BYTES = 7000
"""Longest payload sent (bytes of UTF-8); PostgreSQL's limit is 7999."""

ALL = "all"
STREAM = "stream"
CATEGORY = "category"


@dataclass(frozen=True, slots=True)
class Touched:
    """The keys a commit may have changed: ``streams`` (their categories too), else
    ``categories`` (every stream of them), else anything."""

    streams: frozenset[str] | None = None
    categories: frozenset[str] | None = None

    @property
    def anything(self) -> bool:
        return self.streams is None and self.categories is None


ANYTHING = Touched()


def payload(last_position: int, stream_ids: Iterable[str]) -> str:
    """The notification of a commit that indexed events of ``stream_ids`` up to
    ``last_position``: the streams, else their categories, else the position alone."""
    head = str(last_position)
    streams = list(dict.fromkeys(stream_ids))
    if not streams:
        return head
    text = _fitting(head, "streams", streams)
    if text is None:  # the categories are worked out only when the streams do not fit
        text = _fitting(head, "categories", list(dict.fromkeys(category_of(s) for s in streams)))
    return head if text is None else text


def _fitting(head: str, field: str, names: list[str]) -> str | None:
    """``<head> {"<field>": names}`` if it fits in :data:`PAYLOAD_BYTES`, else None."""
    # Each name costs at least its length plus quotes and a comma: skip encoding a list that
    # cannot fit (a transaction of thousands of streams).
    if sum(len(n) + 3 for n in names) + len(head) + 16 > PAYLOAD_BYTES:
        return None
    text = f"{head} {orjson.dumps({field: names}).decode()}"
    return text if len(text.encode()) <= PAYLOAD_BYTES else None


def parse(text: str) -> Touched:
    """What a payload says was touched; anything for the plain position or what is not
    understood (a newer format, a hand-made ``NOTIFY``)."""
    _position, _, rest = text.partition(" ")
    if not rest:
        return ANYTHING
    try:
        document = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return ANYTHING
    if not isinstance(document, dict):
        return ANYTHING
    for field in ("streams", "categories"):
        names = document.get(field)
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            names = frozenset(names)
            return Touched(streams=names) if field == "streams" else Touched(categories=names)
    return ANYTHING


class Watch:
    """The wake-up of one key (a stream, a category, or everything): take :attr:`generation`
    before reading, then :meth:`wait` with it; any later commit that may concern the key
    wakes the waiter."""

    __slots__ = ("_event", "category", "generation", "kind", "name", "users")

    def __init__(self, kind: str, name: str, generation: int) -> None:
        self.kind = kind
        self.name = name
        self.category = category_of(name) if kind == STREAM else name
        self.generation = generation
        self.users = 0
        self._event = asyncio.Event()

    def bump(self, generation: int) -> None:
        self.generation = generation
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, generation: int, timeout: float) -> int:
        """The generation once it moved past ``generation``, or after ``timeout``."""
        if self.generation == generation and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self.generation


class Watches:
    """The watches of one listener, by key, with the count of their users."""

    def __init__(self) -> None:
        self.generation = 0
        """Moves on at every :meth:`touch`."""
        self.everything = Watch(ALL, "$all", 0)
        self._streams: dict[str, Watch] = {}
        self._categories: dict[str, Watch] = {}

    def _table(self, kind: str) -> dict[str, Watch]:
        if kind == STREAM:
            return self._streams
        if kind == CATEGORY:
            return self._categories
        raise ValueError(f"no watch of kind {kind!r}")

    def acquire(self, kind: str, name: str) -> Watch:
        """The watch of a stream or category (``kind`` "all": of everything); give it back with
        :meth:`release`."""
        if kind == ALL:
            return self.everything
        table = self._table(kind)
        watch = table.get(name)
        if watch is None:
            watch = table[name] = Watch(kind, name, self.generation)
        watch.users += 1
        return watch

    def release(self, watch: Watch) -> None:
        if watch.kind == ALL:
            return
        watch.users -= 1
        if watch.users <= 0:
            table = self._table(watch.kind)
            if table.get(watch.name) is watch:
                del table[watch.name]

    def watched(self) -> int:
        """Streams and categories watched now."""
        return len(self._streams) + len(self._categories)

    def touch(self, touched: Touched) -> None:
        """A commit (or a reconnect: anything) happened: bump the watches it may concern."""
        self.generation += 1
        generation = self.generation
        self.everything.bump(generation)
        if touched.streams is not None:
            categories: set[str] = set()
            for stream in touched.streams:
                watch = self._streams.get(stream)
                if watch is not None:
                    watch.bump(generation)
                if self._categories:
                    categories.add(category_of(stream))
            for category in categories:
                watch = self._categories.get(category)
                if watch is not None:
                    watch.bump(generation)
        elif touched.categories is not None:
            for category in touched.categories:
                watch = self._categories.get(category)
                if watch is not None:
                    watch.bump(generation)
            for watch in self._streams.values():
                if watch.category in touched.categories:
                    watch.bump(generation)
        else:
            for watch in (*self._streams.values(), *self._categories.values()):
                watch.bump(generation)
