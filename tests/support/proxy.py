"""A TCP proxy in front of PostgreSQL that can lose the reply to one COMMIT.

:meth:`LossyProxy.lose_next_commit_reply` arms it: the next COMMIT that a client sends after a
given statement (by default the writer's commit marker) is forwarded to the server as usual,
and the server's answer is read - so the server has committed by then - but never passed on:
the proxy closes the client's connection instead. The client sees exactly what a network
failure between COMMIT and its reply looks like (docs/design.md section 2, step 5). Everything else
is forwarded byte for byte.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo

COMMIT = b"COMMIT\x00"  # in the Parse or Query message, and in the CommandComplete tag


class LossyProxy:
    """A proxy for ``database_url``; ``url`` is the same database through the proxy.

    ``listener``: a socket already bound (and not listening, so that connections to it are
    refused until then) to serve on; else one on a free port."""

    def __init__(self, database_url: str, *, listener: socket.socket | None = None) -> None:
        params = conninfo_to_dict(database_url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._target: tuple[int, object] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        if listener is None:
            self._listener = socket.create_server(("127.0.0.1", 0))
        else:
            listener.listen()
            self._listener = listener
        self.url = make_conninfo(
            database_url, host="127.0.0.1", port=self._listener.getsockname()[1]
        )
        self._armed = threading.Event()
        self._after = b""
        self.tripped = threading.Event()
        """Set once a COMMIT's reply was swallowed."""
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="lossy-proxy", daemon=True)

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def lose_next_commit_reply(self, *, after: bytes = b"INSERT INTO appends") -> None:
        """Swallow the reply to the next COMMIT that a client sends after a statement holding
        ``after`` (by default: the writer's commit marker), and drop that client."""
        self._after = after
        self.tripped.clear()
        self._armed.set()

    def close(self) -> None:
        """Stop accepting and close every proxied connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            family, address = self._target
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(address)  # type: ignore[arg-type]
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets += [client, server]
            swallow = threading.Event()
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump,
                    args=(source, sink, upstream, swallow, client, server),
                    daemon=True,
                ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        upstream: bool,
        swallow: threading.Event,
        client: socket.socket,
        server: socket.socket,
    ) -> None:
        swallowed = b""
        seen = False  # upstream: the statement that must come before the COMMIT
        try:
            while data := source.recv(65536):
                if upstream and self._armed.is_set():
                    seen = seen or self._after in data
                if upstream and seen and COMMIT in data and self._armed.is_set():
                    self._armed.clear()
                    swallow.set()  # before forwarding: no byte of the reply may slip through
                elif not upstream and swallow.is_set():
                    swallowed += data
                    if COMMIT in swallowed:  # the server's CommandComplete: it has committed
                        self.tripped.set()
                        break
                    continue
                sink.sendall(data)
        except OSError:
            pass
        _close(client)
        _close(server)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
