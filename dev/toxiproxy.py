"""Shopify's toxiproxy, the network fault proxy of the fault tests (docs/design.md section 14).

Install: ``go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0`` (and ``cmd/cli``) from
the Go module proxy into ``.kafkastore/cache/toxiproxy-<version>/`` (:func:`ensure_installed`;
``make install`` runs it through ``python -m dev.toxiproxy install``). Go comes from apt when it
is missing and we are root. ``@latest`` resolves to an old release without these commands, so
the version is pinned.

Drive: :class:`Toxiproxy` is a small typed client of the server's HTTP API (httpx): proxies
(``listen`` → ``upstream``, enabled or not) and toxics on them - latency (with jitter),
bandwidth, ``reset_peer`` (TCP RST), ``timeout`` (a black hole: data is dropped, and with
``timeout=0`` the connection is never closed) - each on one direction only: ``upstream`` is what
the client sends to the server, ``downstream`` what comes back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from dev.process import (
    LOCALHOST,
    StackError,
    apt_install,
    child_environment,
    free_port,
    port_accepts,
    state_dir,
    tail,
    terminate,
)
from kafkastore.config import running_in_ci
from kafkastore.retry import Backoff

VERSION = "v2.12.0"
MODULE = "github.com/Shopify/toxiproxy/v2"
COMMANDS = ("server", "cli")

Stream = Literal["upstream", "downstream"]
"""``upstream``: client → server; ``downstream``: server → client."""


def cache_dir() -> Path:
    """Where the built binaries are kept (``server`` and ``cli``)."""
    return state_dir() / "cache" / f"toxiproxy-{VERSION}"


def _go() -> str | None:
    found = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)),
        None,
    )
    return found


def _install_go(log_path: Path) -> str:
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError(
            "Go is required to build toxiproxy (the fault tests' network proxy): install it "
            "(Debian/Ubuntu: sudo apt-get install golang-go)"
        )
    env = child_environment({"DEBIAN_FRONTEND": "noninteractive"})
    apt_install(apt, "golang-go", env=env, log_path=log_path)
    go = _go()
    if go is None:
        raise StackError("installed golang-go but found no go command", log=log_path)
    return go


def ensure_installed(*, log_path: Path | None = None) -> Path:
    """The ``server`` binary, built with ``go install`` once (into :func:`cache_dir`)."""
    home = cache_dir()
    server = home / "server"
    if all((home / c).is_file() for c in COMMANDS):
        return server
    log_path = log_path or state_dir() / "logs" / "toxiproxy-build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    go = _go() or _install_go(log_path)
    home.mkdir(parents=True, exist_ok=True)
    env = child_environment({"GOBIN": str(home), "GOFLAGS": "-buildvcs=false"})
    cmd = [go, "install", *(f"{MODULE}/cmd/{c}@{VERSION}" for c in COMMANDS)]
    with log_path.open("ab") as out:
        if subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode:
            raise StackError(f"go install of toxiproxy {VERSION} failed", log=log_path)
    if not server.is_file():
        raise StackError(f"go install left no {server}", log=log_path)
    return server


@dataclass(frozen=True, slots=True)
class Toxic:
    """A toxic as the server reports it."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Proxy:
    """One proxy: clients connect to ``listen``, the server forwards to ``upstream``."""

    api: Toxiproxy
    name: str
    listen: str
    upstream: str

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def add(
        self,
        type_: str,
        *,
        stream: Stream,
        name: str | None = None,
        toxicity: float = 1.0,
        **attributes: int,
    ) -> Toxic:
        """Add a toxic (``type_`` and its attributes as the server names them)."""
        body = {
            "name": name or f"{type_}_{stream}",
            "type": type_,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        doc = self.api.request("POST", f"/proxies/{self.name}/toxics", body)
        return _toxic(doc)

    def latency(
        self, ms: int, *, jitter: int = 0, stream: Stream = "downstream", toxicity: float = 1.0
    ) -> Toxic:
        """Delay each chunk of data by ``ms`` ± ``jitter`` milliseconds."""
        return self.add("latency", stream=stream, toxicity=toxicity, latency=ms, jitter=jitter)

    def bandwidth(
        self, kb_per_s: int, *, stream: Stream = "downstream", toxicity: float = 1.0
    ) -> Toxic:
        """Limit the rate to ``kb_per_s`` KB/s."""
        return self.add("bandwidth", stream=stream, toxicity=toxicity, rate=kb_per_s)

    def reset_peer(
        self, *, after_ms: int = 0, stream: Stream = "upstream", toxicity: float = 1.0
    ) -> Toxic:
        """Reset the connections (TCP RST) ``after_ms`` after data arrives (0: at once);
        ``toxicity``: the share of the connections it applies to (each drawn apart)."""
        return self.add("reset_peer", stream=stream, toxicity=toxicity, timeout=after_ms)

    def black_hole(self, *, close_after_ms: int = 0, stream: Stream = "downstream") -> Toxic:
        """Drop all data in ``stream``; close after ``close_after_ms`` (0: never)."""
        return self.add("timeout", stream=stream, timeout=close_after_ms)

    def remove(self, toxic: Toxic | str) -> None:
        name = toxic if isinstance(toxic, str) else toxic.name
        self.api.request("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def toxics(self) -> list[Toxic]:
        doc = self.api.request("GET", f"/proxies/{self.name}/toxics")
        return [_toxic(t) for t in doc]

    def set_enabled(self, enabled: bool) -> None:
        """Disabled: existing connections are closed and new ones refused."""
        self.api.request("POST", f"/proxies/{self.name}", {"enabled": enabled})

    def set_upstream(self, upstream: str) -> Proxy:
        """Forward to another server from now on (the proxy keeps its listen port)."""
        doc = self.api.request("POST", f"/proxies/{self.name}", {"upstream": upstream})
        return Proxy(self.api, doc["name"], doc["listen"], doc["upstream"])

    def enabled(self) -> bool:
        return bool(self.api.request("GET", f"/proxies/{self.name}")["enabled"])


def _toxic(doc: dict[str, Any]) -> Toxic:
    return Toxic(
        name=doc["name"],
        type=doc["type"],
        stream=doc["stream"],
        toxicity=float(doc["toxicity"]),
        attributes=dict(doc.get("attributes") or {}),
    )


@dataclass(slots=True)
class Toxiproxy:
    """The HTTP API of one toxiproxy server (``url``, e.g. ``http://127.0.0.1:8474``)."""

    url: str
    _client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.url, timeout=10.0)

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            answer = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise StackError(f"toxiproxy at {self.url}: {method} {path}: {exc}") from exc
        if answer.status_code >= 400:
            raise StackError(f"toxiproxy: {method} {path} → {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def version(self) -> str:
        try:
            answer = self._client.get("/version")
        except httpx.HTTPError as exc:
            raise StackError(f"toxiproxy at {self.url}: {exc}") from exc
        text = answer.text.strip()
        return str(answer.json().get("version", text)) if text.startswith("{") else text

    def create(self, name: str, upstream: str, *, listen_port: int | None = None) -> Proxy:
        """A proxy listening on ``listen_port`` (a free one by default) in front of
        ``upstream`` (``host:port``)."""
        port = listen_port if listen_port is not None else free_port()
        body = {"name": name, "listen": f"{LOCALHOST}:{port}", "upstream": upstream}
        doc = self.request("POST", "/proxies", body)
        return Proxy(self, doc["name"], doc["listen"], doc["upstream"])

    def proxies(self) -> list[Proxy]:
        doc = self.request("GET", "/proxies")
        return [Proxy(self, p["name"], p["listen"], p["upstream"]) for p in doc.values()]

    def delete(self, proxy: Proxy) -> None:
        self.request("DELETE", f"/proxies/{proxy.name}")

    def reset(self) -> None:
        """Every proxy enabled again, every toxic removed (the heal)."""
        self.request("POST", "/reset")


@dataclass(slots=True)
class Server:
    """A running toxiproxy ``server`` process of ours."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def stop(self) -> None:
        terminate(self.proc.pid, proc=self.proc, timeout=10.0)


def start(log_path: Path, *, port: int | None = None, timeout: float = 30.0) -> Server:
    """Start ``server`` on ``port`` (a free one by default); return once its API answers."""
    binary = ensure_installed()
    port = port if port is not None else free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary), "-host", LOCALHOST, "-port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, port, log_path)
    for _ in Backoff(initial=0.05, maximum=0.2).attempts(timeout=timeout):
        if proc.poll() is not None:
            raise StackError(f"toxiproxy exited with {proc.returncode}", log=log_path)
        if port_accepts(port):
            return server
    server.stop()
    raise StackError(f"toxiproxy did not listen on {port} within {timeout:.0f}s", log=log_path)


def main(argv: list[str] | None = None) -> int:
    """``python -m dev.toxiproxy install`` (``make install``): build the binaries once. A
    failure is a warning (the fault tests then skip), an error under ``CI=true``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dev.toxiproxy")
    parser.add_argument("action", choices=["install"])
    parser.parse_args(argv)
    try:
        print(ensure_installed())
    except StackError as exc:
        print(f"dev.toxiproxy: {exc.message}\n{tail(exc.log)}", file=sys.stderr)
        return 1 if running_in_ci() else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
