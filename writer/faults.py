"""Fault injection at the named steps of the append protocol, for tests only.

The protocol calls :func:`step` at each point where a test may want to kill, crash or delay the
writer: ``"locked"`` (heads locked and decided), ``"produced"`` (every message handed to the
producer), ``"acked"`` (every delivery report in), ``"before_commit"`` and ``"commit"`` (the
heads and marker sent, COMMIT not yet). Nothing is installed in production, so a step costs one
global lookup and a test of an empty list.

The hook is process-wide, not a context variable: the protocol runs on the writer's worker
threads, which a context variable of the test's thread would not reach::

    with faults.injected(lambda step: ...), EventStore(settings) as store:
        store.append(...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

FaultHook = Callable[[str], None]
"""Called with the name of the step the protocol reached."""

_installed: list[FaultHook] = []  # the innermost injection last


def step(name: str) -> None:
    """The protocol reached step ``name``: call the injected hook, if any."""
    if _installed:
        _installed[-1](name)


@contextlib.contextmanager
def injected(hook: FaultHook) -> Iterator[None]:
    """Call ``hook`` at every step of every append in this process until the block ends."""
    _installed.append(hook)
    try:
        yield
    finally:
        _installed.remove(hook)
