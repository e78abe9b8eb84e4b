"""Helpers of the indexer tests: an in-process indexer and waits on the index."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg

from indexer.service import Indexer
from kafkastore.config import Settings


class IndexerThread:
    """An :class:`Indexer` on a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.indexer = Indexer(settings, poll_timeout=0.05)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="test-indexer", daemon=True)

    def _run(self) -> None:
        try:
            self.indexer.run()
        except BaseException as exc:
            self.errors.append(exc)

    def check(self) -> None:
        """Raise what killed the indexer, if anything did."""
        if self.errors:
            raise self.errors[0]

    def stop(self) -> None:
        self.indexer.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the indexer did not stop"
        self.check()


@contextlib.contextmanager
def running_indexer(settings: Settings) -> Iterator[IndexerThread]:
    """An indexer on a thread of this process, stopped (cleanly) at the end."""
    handle = IndexerThread(settings)
    handle.thread.start()
    try:
        yield handle
    finally:
        handle.stop()


def indexed(database_url: str, stream_ids: list[str]) -> list[tuple[str, int, str]]:
    """(stream_id, version, event_id) of these streams in the index, in position order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT stream_id, version, event_id::text FROM events WHERE stream_id = ANY(%s) "
            "ORDER BY global_position",
            (stream_ids,),
        ).fetchall()
    return [(s, int(v), e) for s, v, e in rows]


def wait_for_count(
    database_url: str,
    stream_ids: list[str],
    count: int,
    timeout: float = 60,
    indexer: IndexerThread | None = None,
) -> int:
    """Wait until the index holds ``count`` events of these streams; return what it holds."""
    deadline = time.monotonic() + timeout
    while True:
        if indexer is not None:
            indexer.check()
        n = len(indexed(database_url, stream_ids))
        if n >= count or time.monotonic() > deadline:
            return n
        time.sleep(0.05)
