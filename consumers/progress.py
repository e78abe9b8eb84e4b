"""What a long-running subscription tells its operator: start, assignments, progress, stop.

:func:`visible_logging` makes the ``kafkastore`` loggers print at INFO to stderr while
``Subscription.run()`` blocks, *only* when the application configured no logging at all (a
script like the README's ``balances.py``); an application with its own handlers keeps its
configuration untouched. :class:`ProgressTicker` logs one progress line every
:data:`PROGRESS_EVERY` seconds, like the indexer does.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from consumers.stopflag import StopFlag

PROGRESS_EVERY = 10.0
"""Seconds between two progress lines."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configured(logger: logging.Logger) -> bool:
    """Whether a record of ``logger`` reaches any handler (its own or an ancestor's)."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


@contextlib.contextmanager
def visible_logging(name: str = "kafkastore") -> Iterator[None]:
    """INFO lines of ``name`` on stderr for the duration, when nothing else would show them."""
    logger = logging.getLogger(name)
    if _configured(logger):
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class ProgressTicker:
    """A daemon thread that logs ``line(stats(), rate)`` every ``every`` seconds until ``stop``
    is raised; ``rate`` is the events per second of ``count(stats())`` since the last line."""

    def __init__(
        self,
        logger: logging.Logger,
        stats: Callable[[], dict[str, Any]],
        *,
        stop: StopFlag,
        line: Callable[[dict[str, Any], float], str],
        count: Callable[[dict[str, Any]], int],
        every: float = PROGRESS_EVERY,
    ) -> None:
        self._logger = logger
        self._stats = stats
        self._stop = stop
        self._line = line
        self._count = count
        self._every = every
        self._thread = threading.Thread(target=self._run, name="kafkastore-progress", daemon=True)

    def start(self) -> ProgressTicker:
        self._thread.start()
        return self

    def join(self, timeout: float = 2.0) -> None:
        """Wait for the thread once ``stop`` is raised."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        last_at, last_count = time.monotonic(), 0
        while not self._stop.wait(self._every):
            stats = self._stats()
            now, count = time.monotonic(), self._count(stats)
            rate = (count - last_count) / max(now - last_at, 1e-9)
            self._logger.info("%s", self._line(stats, rate))
            last_at, last_count = now, count
