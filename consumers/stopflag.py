"""A stop request that a signal handler may raise, and a sleep that ends when it is raised."""

from __future__ import annotations

import time

__all__ = ["StopFlag"]

SLICE = 0.05
"""How often :meth:`StopFlag.wait` looks at the flag (seconds)."""


class StopFlag:
    """Set once to ask a loop to stop; thread-safe and signal-safe.

    Not a :class:`threading.Event`: ``Event.set()`` takes the lock of the event's condition,
    which the interrupted thread may hold (a signal handler runs in the main thread between
    two bytecodes, possibly inside ``Event.wait()``): the handler would deadlock. Here ``set()``
    only assigns a bool, and :meth:`wait` watches it in short slices.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Raise the flag (from any thread or a signal handler)."""
        self._set = True

    def is_set(self) -> bool:
        """Whether the flag was raised."""
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True as soon as the flag is raised, else False."""
        deadline = time.monotonic() + timeout
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, SLICE))
        return True
