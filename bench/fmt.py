"""Markdown formatting of the results: numbers, milliseconds, peak RSS, tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if digits == 0:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def ms(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def rss(peaks: Any) -> str:
    if not isinstance(peaks, Mapping) or not peaks:
        return "-"
    return ", ".join(f"{k} {v:.0f}" for k, v in peaks.items() if isinstance(v, (int, float)))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines
