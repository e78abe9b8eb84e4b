"""``python -m kafkastore.cli <subcommand>`` as a subprocess of a test: started with the test's
settings in its environment, waited for (an HTTP URL answering 200 or a line in its output), and
stopped with SIGTERM (SIGKILL after a timeout) so no process outlives the test."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from dev.process import spawn_logged, tail, terminate
from kafkastore.config import Settings, settings_environ


def settings_environment(settings: Settings) -> dict[str, str]:
    """``KAFKASTORE_*`` variables that make a child process build exactly ``settings``."""
    return settings_environ(settings)


class ServiceProcess:
    """One kafkastore service process. ``start()`` and ``stop()`` are safe to call twice."""

    def __init__(
        self,
        subcommand: str,
        *args: str,
        env: Mapping[str, str],
        log_path: Path,
        ready_url: str | None = None,
        ready_line: str | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.argv = [sys.executable, "-m", "kafkastore.cli", subcommand, *args]
        self.env = dict(env)
        self.log_path = log_path
        self.ready_url = ready_url
        self.ready_line = ready_line
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ServiceProcess:
        """Start and wait until ready; raise with the log's tail when it exits or times out."""
        if self._proc is not None:
            return self
        self._proc = spawn_logged(self.argv, env=self.env, log_path=self.log_path)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if not self.running:
                raise RuntimeError(
                    f"{' '.join(self.argv[3:])} exited with {self.returncode}\n{self.log()}"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{' '.join(self.argv[3:])} not ready after {self.ready_timeout:.0f}s\n"
                    f"{self.log()}"
                )
            time.sleep(0.1)

    def _is_ready(self) -> bool:
        if self.ready_url is not None:
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1.0) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False
        if self.ready_line is not None:
            try:
                return self.ready_line in self.log_path.read_text(errors="replace")
            except OSError:
                return False
        return True  # no readiness signal: running is all we can check

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            terminate(self._proc.pid, proc=self._proc, timeout=timeout)
        return self._proc.returncode

    def log(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
