"""``kafkastore serve`` for a test: the API on a free port (with an indexer on a thread of the
test's process or as a process of its own), and users with tokens for an API with auth on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from dev.process import LOCALHOST, free_port
from kafkastore import authstore
from kafkastore.config import Settings
from tests.indexer.helpers import running_indexer
from tests.support.process import ServiceProcess, settings_environment

CALLERS: dict[str, tuple[str, ...]] = {
    "admin": ("admin",),
    "ops": ("ops",),
    "alice": (),
    "bob": (),
}
"""The callers of the auth tests by their roles: an admin, an operator, two plain users."""


def serve_process(
    settings: Settings, log_path: Path, *serve_args: str, ready_line: str | None = None
) -> tuple[ServiceProcess, str]:
    """``kafkastore serve --host 127.0.0.1 --port <free port> *serve_args`` with ``settings``
    (not started yet) and its base URL (``https://`` when ``settings`` has a certificate).
    It is ready when ``/readyz`` answers 200, or, given ``ready_line``, when its log shows
    that line."""
    port = free_port()
    scheme = "https" if settings.tls_certfile else "http"
    url = f"{scheme}://{LOCALHOST}:{port}"
    proc = ServiceProcess(
        "serve",
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        *serve_args,
        env=settings_environment(settings),
        log_path=log_path,
        ready_url=None if ready_line is not None else f"{url}/readyz",
        ready_line=ready_line,
    )
    return proc, url


@contextlib.contextmanager
def serving(
    settings: Settings,
    log_path: Path,
    *serve_args: str,
    indexer_log: Path | None = None,
    ready_line: str | None = None,
) -> Iterator[str]:
    """``kafkastore serve`` (see :func:`serve_process`, ``ready_line`` included) and an indexer,
    both with ``settings``, stopped cleanly at the end; yields the API's base URL once it is
    ready. The indexer runs on a thread of this process, or, given ``indexer_log``, as a process
    of its own (``kafkastore indexer``) logging there and ready when it has its partitions."""
    api, url = serve_process(settings, log_path, *serve_args, ready_line=ready_line)
    with contextlib.ExitStack() as stack:
        if indexer_log is None:
            stack.enter_context(running_indexer(settings))
        else:
            stack.enter_context(
                ServiceProcess(
                    "indexer",
                    env=settings_environment(settings),
                    log_path=indexer_log,
                    ready_line="assigned",
                )
            )
        stack.enter_context(api)
        yield url


def users_with_tokens(
    database_url: str, roles: Mapping[str, Sequence[str]], suffix: str
) -> dict[str, str]:
    """For each ``who`` of ``roles`` (``{"admin": ("admin",), "bob": ()}``), a user named
    ``f"{who}-{suffix}"`` with those roles and a token of its own; the tokens by ``who``."""
    tokens: dict[str, str] = {}
    for who, its_roles in roles.items():
        name = f"{who}-{suffix}"
        authstore.add_user(database_url, name, tuple(its_roles))
        tokens[who] = authstore.create_token(database_url, name)[1]
    return tokens


def spoiled_tokens(database_url: str, user: str) -> dict[str, str]:
    """Two more tokens of ``user``: ``"revoked"`` (revoked at once) and ``"expired"`` (expires
    one second after it is made: wait that long before using it)."""
    info, revoked = authstore.create_token(database_url, user)
    authstore.revoke_token(database_url, info.id)
    expired = authstore.create_token(database_url, user, expires_in=1)[1]
    return {"revoked": revoked, "expired": expired}
