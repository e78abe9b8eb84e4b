"""The one way to install stop-signal handlers (SIGTERM, SIGINT) for a long-running role.

``with stop_signals(on_stop):`` installs a handler that calls ``on_stop(signum)`` and puts the
previous handlers back on exit. Outside the main thread (where Python cannot install handlers)
it installs nothing. Handlers run in the main thread between bytecodes, possibly while that
thread holds a lock: ``on_stop`` must not take locks (so no ``threading.Event.set``). It may set
a plain flag (``consumers.stopflag.StopFlag``), call ``loop.call_soon_threadsafe`` (asyncio), or
raise ``KeyboardInterrupt`` to abandon the main thread's current work (the dev stack's start).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["STOP_SIGNALS", "stop_signals"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_signals(on_stop: Callable[[int], None], *, enabled: bool = True) -> Iterator[bool]:
    """Call ``on_stop(signum)`` on SIGTERM/SIGINT inside the block; yields whether installed."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield False
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        on_stop(signum)

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        yield True
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
