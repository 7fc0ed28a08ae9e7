"""Folder progress: the status of each image (new / in progress / done / skipped) and the counts over the folder.

A person marks an image ``done`` or ``skipped``; that choice is saved with the image's annotations (the ``status``
field of its save file's head) and kept until they change it. An image without a chosen status is ``new`` while
nothing was saved for it, and ``in_progress`` once it has annotations (an action, a finished or imported object).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from finecut.errors import FinecutError

NEW, IN_PROGRESS, DONE, SKIPPED = "new", "in_progress", "done", "skipped"
#: Every status, in the order the app shows them.
STATUSES: tuple[str, ...] = (NEW, IN_PROGRESS, DONE, SKIPPED)
#: Statuses a person sets; the others follow from the annotations.
CHOSEN: tuple[str, ...] = (DONE, SKIPPED)
#: Statuses that still need work.
UNFINISHED: tuple[str, ...] = (NEW, IN_PROGRESS)

__all__ = ["CHOSEN", "DONE", "IN_PROGRESS", "NEW", "SKIPPED", "STATUSES", "UNFINISHED", "check_chosen",
           "derive_status", "next_unfinished", "progress_counts"]


def check_chosen(status: str | None) -> str | None:
    """A status a person may set (``done``, ``skipped``), or None to go back to the derived one."""
    if status is None or status in CHOSEN:
        return status
    raise FinecutError(f"status must be one of {', '.join(CHOSEN)} (or null to clear it), got {str(status)[:40]!r}")


def derive_status(saved: Mapping[str, Any] | None, has_objects: bool | None = None) -> str:
    """The status of an image from its saved state (a save file's head; None: nothing saved)."""
    if not saved:
        return NEW
    chosen = saved.get("status")
    if chosen in CHOSEN:
        return str(chosen)
    session = saved.get("session", saved)  # a legacy save file holds the session under "session"
    if has_objects:
        return IN_PROGRESS
    history = session.get("history")
    if isinstance(history, list) and len(history) > 1:
        return IN_PROGRESS
    if session.get("objects"):  # format 1
        return IN_PROGRESS
    return NEW


def progress_counts(statuses: Iterable[str]) -> dict[str, int]:
    """``{"total": n, "new": .., "in_progress": .., "done": .., "skipped": ..}``."""
    counts = dict.fromkeys(STATUSES, 0)
    total = 0
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
        total += 1
    return {"total": total, **counts}


def next_unfinished(names: Sequence[str], statuses: Mapping[str, str], after: str | None) -> str | None:
    """The first unfinished image after ``after`` in ``names`` (wrapping around; ``after`` itself last), or None."""
    if not names:
        return None
    start = names.index(after) + 1 if after in names else 0
    order = [*names[start:], *names[:start]]
    for name in order:
        if statuses.get(name, NEW) in UNFINISHED:
            return name
    return None
