"""The asyncio twin of :class:`~consumers.subscription.Subscription`.

The consumer loop (confluent-kafka and the verdict queries are blocking) runs in a worker
thread; each event is handed to your ``async def handler(event)`` on the event loop, and the
worker waits for it, so the ordering and the at-least-once guarantee are those of
``Subscription``: offsets are committed only after the handler's coroutine finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from consumers.subscription import Subscription
from kafkastore.records import RecordedEvent

AsyncEventHandler = Callable[[RecordedEvent], Awaitable[None]]


class AsyncSubscription:
    """``await sub.run()`` until ``sub.stop()``; same arguments as ``Subscription`` (except
    that the handler is a coroutine function and projections are not supported: use
    ``Subscription`` with a ``PostgresProjection`` for exactly-once)."""

    def __init__(self, group: str, handler: AsyncEventHandler, **kwargs: Any) -> None:
        self._handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None
        kwargs["install_signal_handlers"] = False
        self.subscription = Subscription(group, self._call, **kwargs)

    @property
    def group(self) -> str:
        return self.subscription.group

    def _call(self, event: RecordedEvent) -> None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(_run(self._handler, event), self._loop)
        future.result()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Handle events until :meth:`stop` (or SIGTERM/SIGINT when ``handle_signals``)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        installed = []
        if handle_signals:
            for s in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(s, self.stop)
                    installed.append(s)
        worker = loop.run_in_executor(None, self.subscription.run)
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            self.stop()
            await worker
            raise
        finally:
            for s in installed:
                loop.remove_signal_handler(s)

    def stop(self) -> None:
        self.subscription.stop()

    def stats(self) -> dict[str, Any]:
        return self.subscription.stats()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _run(handler: AsyncEventHandler, event: RecordedEvent) -> None:
    await handler(event)
