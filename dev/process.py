"""Ports, pids and clean stops shared by the modules of :mod:`dev`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from kafkastore import manifest
from kafkastore.config import child_environ
from kafkastore.errors import KafkaStoreError
from kafkastore.retry import Backoff

LOCALHOST = "127.0.0.1"

# ``.kafkastore/``: the kernel says where the project's state lives (it reads dev.json too).
state_dir = manifest.state_dir
pid_alive = manifest.pid_alive
pid_cmdline = manifest.pid_cmdline


class StackError(KafkaStoreError):
    """A local service could not be installed, started or stopped; ``log`` says why."""

    def __init__(self, message: str, *, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like the servers themselves, so a port in TIME_WAIT counts as free while
        # one with a listener (on this or the wildcard address) does not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def choose_port(given: int | None, preferred: int, *, what: str) -> int:
    """A given port is honoured (an error when busy); else ``preferred`` when free; else any."""
    if given is not None:
        if not port_is_free(given):
            raise StackError(f"{what}: port {given} is already in use")
        return given
    return preferred if port_is_free(preferred) else free_port()


def port_accepts(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """True once ``pid`` has exited (reaped, when ``proc`` is our child) within ``timeout``."""
    for _ in Backoff(initial=0.05, maximum=0.05).attempts(timeout=timeout):
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not pid_alive(pid):
            return True
    return False


def terminate(
    pid: int,
    *,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    sig: signal.Signals = signal.SIGTERM,
) -> None:
    """``sig`` (SIGTERM: a clean shutdown), wait up to ``timeout``, then SIGKILL and wait again.

    Pass ``proc`` when the process is our child so it is reaped rather than left a zombie.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_gone(pid, timeout, proc):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, 10.0, proc):
        raise StackError(f"process {pid} survived SIGKILL")


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for a service we start: ours plus ``overrides``.

    This passes the environment through to a child; it reads no setting (that is
    ``kafkastore.config``'s job, in the child).
    """
    return child_environ(overrides)


def apt_install(apt: str, package: str, *, env: Mapping[str, str], log_path: Path | None) -> None:
    """``apt-get update`` then ``apt-get install -y --no-install-recommends package`` with
    ``env`` (which should set ``DEBIAN_FRONTEND=noninteractive``), their output appended to
    ``log_path`` (dropped when it is None); StackError naming the command that failed."""
    with open(log_path or os.devnull, "ab") as out:
        for cmd in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", package]):
            if subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(env), check=False
            ).returncode:
                raise StackError(f"{' '.join(cmd)} failed", log=log_path)


def spawn_logged(
    argv: list[str], *, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a service process: no stdin, its output (stdout and stderr) appended to
    ``log_path`` (its folder made), our environment plus ``env`` (:func:`child_environment`),
    and a process group of its own, so that a Ctrl-C meant for its parent does not kill it
    before the parent stops it (with SIGTERM, itself)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_environment(env),
            start_new_session=True,
        )


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
