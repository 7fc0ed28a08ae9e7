"""Folder progress bookkeeping: statuses derived from saved annotations, counts, the next unfinished image."""

import pytest

from finecut.app.progress import check_chosen, derive_status, next_unfinished, progress_counts
from finecut.errors import FinecutError


def test_derived_and_chosen_statuses():
    assert derive_status(None) == "new"
    assert derive_status({"format": 2, "history": [1]}) == "new"  # opened, nothing done
    assert derive_status({"format": 2, "history": [1, 2]}) == "in_progress"
    assert derive_status({"format": 2, "history": [5]}, has_objects=True) == "in_progress"  # history trimmed
    assert derive_status({"history": [1, 2], "status": "done"}) == "done"
    assert derive_status({"history": [1], "status": "skipped"}) == "skipped"
    assert derive_status({"history": [1, 2], "status": "bogus"}) == "in_progress"
    assert derive_status({"session": {"format": 1, "objects": [{"id": 1}], "history": []}}) == "in_progress"


def test_check_chosen():
    assert check_chosen("done") == "done" and check_chosen(None) is None
    with pytest.raises(FinecutError, match="status must be one of done, skipped"):
        check_chosen("in_progress")


def test_counts_and_next_unfinished():
    statuses = {"a": "done", "b": "new", "c": "skipped", "d": "in_progress"}
    assert progress_counts(statuses.values()) == {"total": 4, "new": 1, "in_progress": 1, "done": 1, "skipped": 1}
    names = ["a", "b", "c", "d"]
    assert next_unfinished(names, statuses, "a") == "b"
    assert next_unfinished(names, statuses, "b") == "d"
    assert next_unfinished(names, statuses, "d") == "b"  # wraps around
    assert next_unfinished(names, statuses, None) == "b"
    assert next_unfinished(names, {n: "done" for n in names}, "a") is None
    assert next_unfinished(["a"], {"a": "new"}, "a") == "a"  # the image itself, last
    assert next_unfinished([], {}, None) is None
