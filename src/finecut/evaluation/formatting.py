"""How numbers appear in the Markdown reports (one place, so every table formats alike)."""

from __future__ import annotations

#: What a table shows where a value does not exist (a metric a run has no data for).
MISSING = "–"


def number(value: float | int | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals (integers as they are), or :data:`MISSING`."""
    if value is None:
        return MISSING
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    """A fraction in [0, 1] as a percentage with two decimals, or :data:`MISSING`."""
    return MISSING if value is None else f"{100 * value:.2f}"
