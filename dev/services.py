"""The kafkastore services (HTTP API, indexer) as subprocesses of the dev stack."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev.process import StackError, child_environment, tail
from kafkastore.retry import Backoff


@dataclass(slots=True)
class Service:
    """A running ``python -m kafkastore.cli <subcommand>``."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def start(
    name: str,
    subcommand: str,
    args: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
) -> Service:
    """Start the service in its own session (Ctrl-C reaches ``kafkastore dev`` only, which stops
    services in order) with output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kafkastore.cli", subcommand, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_environment(env),
            start_new_session=True,
        )
    return Service(name=name, proc=proc, log_path=log_path)


def wait_http_ok(url: str, *, timeout: float, service: Service | None = None) -> None:
    """Poll ``url`` until it answers 200 (``/readyz``: Kafka and PostgreSQL reachable)."""
    last = "no answer"
    for _ in Backoff(initial=0.2, maximum=0.2).attempts(timeout=timeout):
        if service is not None:
            _check_running(service)
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
    log = service.log_path if service else None
    raise StackError(f"{url} not ready within {timeout:.0f}s ({last})", log=log)


def wait_alive(service: Service, seconds: float) -> None:
    """A service without a readiness endpoint: it must at least survive its start-up."""
    for _ in Backoff(initial=0.1, maximum=0.1).attempts(timeout=seconds):
        _check_running(service)


def _check_running(service: Service) -> None:
    if service.proc.poll() is not None:
        raise StackError(
            f"{service.name} exited with {service.proc.returncode}\n{tail(service.log_path)}",
            log=service.log_path,
        )


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float = 15.0,
    token: str | None = None,
) -> tuple[int, Any]:
    """One JSON request with the standard library (the CLI must not need the test extras)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "content-type": "application/json",
            "accept": "application/json",
            **({"authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")
