"""Unique names: tests isolate themselves by topic, group and stream names, never by cleanup."""

from __future__ import annotations

import uuid


def unique(prefix: str = "test") -> str:
    """``<prefix>-<12 hex>``: a valid topic, group, stream id (category = ``prefix``) or
    database name suffix, unique across concurrent test sessions on one cluster."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
