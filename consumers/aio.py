"""The asyncio twin of :class:`~consumers.subscription.Subscription`.

The consumer loop (confluent-kafka and the verdict queries are blocking) runs in a worker
thread; each event is handed to your ``async def handler(event)`` on the event loop, and the
worker waits for it, so the ordering and the at-least-once guarantee are those of
``Subscription``: offsets are committed only after the handler's coroutine finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from consumers.subscription import Subscription
from kafkastore.records import RecordedEvent
from kafkastore.signals import stop_signals

logger = logging.getLogger("kafkastore.consumers")

AsyncEventHandler = Callable[[RecordedEvent], Awaitable[None]]
"""``async def handler(event)`` of an :class:`AsyncSubscription`."""


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
        """The consumer group."""
        return self.subscription.group

    def _call(self, event: RecordedEvent) -> None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(_run(self._handler, event), self._loop)
        future.result()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Handle events until :meth:`stop` (or SIGTERM/SIGINT when ``handle_signals``).

        Raises what :meth:`Subscription.run` raises; cancelling the task stops the
        subscription, waits for its worker thread, then re-raises the cancellation.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop

        def on_signal(signum: int) -> None:
            logger.info("%r: signal %s, stopping after the current batch", self, signum)
            loop.call_soon_threadsafe(self.stop)

        with stop_signals(on_signal, enabled=handle_signals):
            worker = loop.run_in_executor(None, self.subscription.run)
            try:
                await asyncio.shield(worker)
            except asyncio.CancelledError:
                self.stop()
                await worker
                raise

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch (thread-safe, signal-safe)."""
        self.subscription.stop()

    def stats(self) -> dict[str, Any]:
        """The subscription's positions, lag, rates and handler outcomes."""
        return self.subscription.stats()

    def __repr__(self) -> str:
        return f"Async{self.subscription!r}"

    async def __aenter__(self) -> AsyncSubscription:
        """The subscription itself; ``await`` :meth:`run` inside the block."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """:meth:`stop` (a running :meth:`run` returns after the current batch)."""
        self.stop()


async def _run(handler: AsyncEventHandler, event: RecordedEvent) -> None:
    await handler(event)
