"""Which stack a command talks to: flags > ``KAFKASTORE_*`` variables > the running dev stack >
defaults, decided per setting.

The *running dev stack* is the ``.kafkastore/dev.json`` of the checkout the command runs in
(found from the current directory upwards; ``$KAFKASTORE_DEV_HOME/dev.json`` when that variable
is set), used only while every process it lists still runs. It gives ``kafka``,
``database_url``, ``topic`` and ``api_url``. So ``kafkastore append`` or ``EventStore.connect()``
run from a checkout whose ``kafkastore dev`` took other ports because 9092/5432/8080 were busy
reach that checkout's stack, never the other one on the default ports.

The CLI prints :meth:`Target.describe` on stderr (when the stack is not the default one);
``EventStore.connect()`` logs it. dev.json is parsed only by :mod:`kafkastore.manifest`; the
environment is read only by :mod:`kafkastore.config`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafkastore.config import ENV_PREFIX, Settings, environ_get, environ_has
from kafkastore.errors import ConfigurationError
from kafkastore.manifest import FILE_NAME, Manifest

__all__ = ["ENDPOINTS", "Target", "find_manifest", "resolve"]

logger = logging.getLogger("kafkastore")

ENDPOINTS: dict[str, str] = {
    "kafka": "Kafka",
    "database_url": "PostgreSQL",
    "topic": "topic",
    "api_url": "API",
}
"""The settings a dev stack provides, with the names :meth:`Target.describe` gives them."""

DEV_HOME_VARIABLE = "KAFKASTORE_DEV_HOME"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The settings a command uses, and where each endpoint came from."""

    settings: Settings
    """The resolved settings."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """For each of :data:`ENDPOINTS`: ``"flag"``, ``"environment"``, ``"dev stack"`` or
    ``"default"``."""
    flag_names: Mapping[str, str] = field(default_factory=dict)
    """The option each flag-given setting came from (``--kafka``), for messages."""
    stack: Path | None = None
    """The dev.json whose stack is used (for at least one endpoint)."""
    stale: Path | None = None
    """A dev.json that was found but ignored: its processes are gone."""

    @property
    def is_default(self) -> bool:
        """Every endpoint is the built-in default (the stack on 9092/5432/8080)."""
        return all(source == "default" for source in self.sources.values())

    def describe(self, *, uses_api: bool = True) -> str | None:
        """One line naming the endpoints that are not the defaults and where each came from;
        None for the default stack (nothing to say). ``uses_api=False`` leaves out the API URL
        (a command that serves or never calls the API: ``serve`` listens where its flags say)."""
        notes: list[str] = []
        if self.stale is not None:
            notes.append(f"ignoring {self.stale}: its processes are gone")
        if not self.is_default:
            # Consecutive endpoints of one origin share it: "Kafka a, PostgreSQL b (origin)".
            groups: list[tuple[str, list[str]]] = []
            for name, label in ENDPOINTS.items():
                if name == "api_url" and not uses_api:
                    continue
                value = getattr(self.settings, name)
                if not value or self.sources.get(name, "default") == "default":
                    continue
                origin, part = self._origin(name), f"{label} {_redact(str(value))}"
                if groups and groups[-1][0] == origin:
                    groups[-1][1].append(part)
                else:
                    groups.append((origin, [part]))
            notes.append("using " + ", ".join(f"{', '.join(p)} ({o})" for o, p in groups))
        return "; ".join(notes) or None

    def _origin(self, name: str) -> str:
        source = self.sources.get(name, "default")
        if source == "flag":
            return self.flag_names.get(name, "flag")
        if source == "environment":
            return ENV_PREFIX + name.upper()
        if source == "dev stack":
            return f"the dev stack of {self.stack}"
        return "default"


def find_manifest(start: Path | None = None) -> Path | None:
    """``$KAFKASTORE_DEV_HOME/dev.json`` when that variable is set, else the first
    ``.kafkastore/dev.json`` in ``start`` (default: the current directory) or a parent; None
    when there is none."""
    home = environ_get(DEV_HOME_VARIABLE)
    if home:
        path = Path(home) / FILE_NAME
        return path if path.is_file() else None
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        path = directory / ".kafkastore" / FILE_NAME
        if path.is_file():
            return path
    return None


def resolve(
    flags: Mapping[str, Any] | None = None,
    *,
    flag_names: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Target:
    """Settings from ``flags`` (non-None values win), ``KAFKASTORE_*`` variables, the running
    dev stack of ``cwd``'s checkout, then the defaults."""
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    fallbacks: dict[str, Any] = {}
    stack = stale = None
    path = find_manifest(cwd)
    if path is not None:
        manifest = _load(path)
        if manifest is not None and manifest.alive():
            stack = path
            fallbacks = {
                "kafka": manifest.kafka,
                "database_url": manifest.database_url,
                "topic": manifest.topic,
                "api_url": manifest.api or "",
            }
            # A --auth stack's broker takes SCRAM logins only: those of its principals.
            fallbacks.update(manifest.kafka_settings())
        else:
            stale = path
    settings = Settings.from_env(fallbacks=fallbacks, **given)
    sources: dict[str, str] = {}
    for name in ENDPOINTS:
        if name in given:
            sources[name] = "flag"
        elif environ_has(ENV_PREFIX + name.upper()):
            sources[name] = "environment"
        elif name in fallbacks:
            sources[name] = "dev stack"
        else:
            sources[name] = "default"
    if not any(s == "dev stack" for s in sources.values()):
        stack = None
    return Target(
        settings=settings,
        sources=sources,
        flag_names=dict(flag_names or {}),
        stack=stack,
        stale=stale,
    )


def _load(path: Path) -> Manifest | None:
    try:
        return Manifest.load(path)
    except ConfigurationError as exc:
        logger.warning("%s", exc.message)
        return None


def _redact(value: str) -> str:
    """A URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", value)
