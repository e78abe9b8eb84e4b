"""A minimal HTTP/1.1 keep-alive client on asyncio streams.

The benchmark's clients share two cores with the server, the broker and PostgreSQL, so they must
cost as little as possible: httpx spends more CPU per request than the server's own parsing. One
:class:`Connection` carries one request at a time (no pipelining), like a browser or a pooled
client; concurrency is the number of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive connection; reconnects when the server closed it between requests."""

    def __init__(self, host: str, port: int, *, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        # Sent with every request (e.g. ``authorization``).
        self._extra = b"".join(
            b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in (headers or {}).items()
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_header = f"{host}:{port}".encode()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._reader = self._writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\n%s" % (
            method.encode(),
            path.encode(),
            self._host_header,
            self._extra,
        )
        if body is not None:
            head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        request = head + b"\r\n" + (body or b"")
        for attempt in (1, 2):
            reader, writer = await self._open()
            try:
                writer.write(request)
                return await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


async def _read_response(reader: asyncio.StreamReader) -> Response:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower().decode()] = value.strip().decode()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = b""
    return Response(status, headers, body)
