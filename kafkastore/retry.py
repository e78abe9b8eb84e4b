"""The one retry/backoff helper: exponential delays, an optional deadline, an optional stop.

Every wait-and-try-again loop of the project goes through :class:`Backoff`, so delays, caps and
deadlines are spelled one way and a shutdown never waits out a sleep::

    for attempt in Backoff(initial=0.05, maximum=1.0).attempts(timeout=5.0):
        if ready():
            break
    else:
        raise Unavailable("not ready within 5s")

``attempts`` yields before the first try (no sleep), then sleeps the next delay before each
further try; it ends (the ``else`` branch runs) when the deadline would pass or ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff: ``initial``, then times ``factor`` per retry, capped at ``maximum``."""

    initial: float = 0.05
    """The first delay (seconds)."""
    maximum: float = 1.0
    """The cap on any one delay (seconds)."""
    factor: float = 2.0
    """How much each delay grows over the previous one."""

    def delays(self) -> Iterator[float]:
        """The delays between tries, without end."""
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)

    def attempts(
        self, *, timeout: float | None = None, stop: threading.Event | None = None
    ) -> Iterator[int]:
        """Attempt numbers from 1; sleeps between them; ends at ``timeout`` or when ``stop`` is set.

        The last sleep is shortened to end at the deadline, so a final try happens at it.
        """
        for step in self._steps(timeout, stop.is_set if stop else None):
            if isinstance(step, int):
                yield step
            elif _pause(step, stop):
                return

    async def attempts_async(
        self, *, timeout: float | None = None, stop: asyncio.Event | None = None
    ) -> AsyncIterator[int]:
        """:meth:`attempts` for coroutines (``async for``); sleeps with ``asyncio``."""
        for step in self._steps(timeout, stop.is_set if stop else None):
            if isinstance(step, int):
                yield step
            elif await _pause_async(step, stop):
                return

    def _steps(
        self, timeout: float | None, stopped: Callable[[], bool] | None
    ) -> Iterator[int | float]:
        """Attempt numbers (int) and the sleeps between them (float), computed lazily: the sleep
        after an attempt is decided once that attempt is over, against the deadline."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        delays = self.delays()
        for attempt in itertools.count(1):
            if stopped is not None and stopped():
                return
            yield attempt
            left = deadline - time.monotonic()
            if left <= 0:
                return
            yield float(min(next(delays), left))


def _pause(delay: float, stop: threading.Event | None) -> bool:
    """Sleep ``delay`` seconds; True when ``stop`` was set meanwhile."""
    if stop is None:
        time.sleep(delay)
        return False
    return stop.wait(delay)


async def _pause_async(delay: float, stop: asyncio.Event | None) -> bool:
    """:func:`_pause` with asyncio."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return False
    return True
