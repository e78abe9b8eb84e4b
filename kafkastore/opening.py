"""What an async factory returns: ``await`` it, or use it in ``async with``.

``await AsyncReads.open(settings)`` gives the open object; ``async with AsyncReads.open(settings)
as reads:`` opens it, and closes it when the block ends - the two ways psycopg and httpx users
expect, so that ``async with Factory.open(...)`` never fails with "'coroutine' object does not
support the asynchronous context manager protocol".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, Protocol, TypeVar


class AsyncClosable(Protocol):
    """An object with ``async def close()``."""

    async def close(self) -> None: ...


T = TypeVar("T", bound=AsyncClosable)


class Opening(Generic[T]):
    """The not-yet-open result of an async factory (``opener`` opens it)."""

    __slots__ = ("_opened", "_opener")

    def __init__(self, opener: Callable[[], Awaitable[T]]) -> None:
        self._opener = opener
        self._opened: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._opener().__await__()

    async def __aenter__(self) -> T:
        self._opened = await self._opener()
        return self._opened

    async def __aexit__(self, *exc: object) -> None:
        if self._opened is not None:
            await self._opened.close()
