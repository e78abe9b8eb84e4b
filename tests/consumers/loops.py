"""Helpers to run a consumer loop in a thread of a test and wait for what it delivers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from consumers.runtime import BatchLoop, PartitionBatch


class LoopThread:
    """Runs ``BatchLoop.run(handler)`` in a thread; collects the batches it handled."""

    def __init__(
        self,
        loop: BatchLoop,
        handler: Callable[[psycopg.Connection, Sequence[PartitionBatch]], None] | None = None,
    ) -> None:
        self.loop = loop
        self.batches: list[PartitionBatch] = []
        self.error: BaseException | None = None
        self._handler = handler
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run(self._handle)
        except BaseException as exc:
            self.error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    def _handle(self, conn: psycopg.Connection, batches: Sequence[PartitionBatch]) -> None:
        if self._handler is not None:
            self._handler(conn, batches)
        with self._cond:
            self.batches.extend(batches)
            self._cond.notify_all()

    def start(self) -> LoopThread:
        self._thread.start()
        return self

    def events(self) -> list[Any]:
        with self._cond:
            return [e for b in self.batches for e in b.events]

    def phantoms(self) -> list[Any]:
        with self._cond:
            return [ph for b in self.batches for ph in b.phantoms]

    def wait_for(self, predicate: Callable[[LoopThread], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                if self.error is not None:
                    raise AssertionError("the loop failed") from self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met within {timeout}s")
                self._cond.wait(min(left, 0.2))

    def stop(self) -> None:
        self.loop.stop()
        self._thread.join(30)
        if self.error is not None:
            raise AssertionError("the loop failed") from self.error

    def __enter__(self) -> LoopThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
