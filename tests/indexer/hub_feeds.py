"""Feeds of the subscriptions' hub (indexer/sse_hub.py) for tests: a task reads each into a list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from indexer.sse_hub import Feed, Hub, follow

HEARTBEAT = 15.0


class Subscriber:
    """One :func:`follow` feed read by a task into ``seen`` (global positions)."""

    def __init__(self, hub: Hub, feed: Feed, *, reading: bool = True) -> None:
        self.wake = asyncio.Event()
        self.left = False
        self.seen: list[int] = []
        self.chunks: AsyncGenerator[bytes, None] = follow(
            hub,
            feed,
            heartbeat=HEARTBEAT,
            wake=self.wake,
            stopped=lambda: self.left or hub.closing.is_set(),
        )
        self.task = asyncio.create_task(self._read()) if reading else None

    async def _read(self) -> None:
        async for chunk in self.chunks:
            if chunk.startswith(b"id: "):
                self.seen.append(int(chunk.split(b"\n", 1)[0][4:]))

    async def stop(self) -> None:
        self.left = True
        self.wake.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)
        await self.chunks.aclose()


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)
