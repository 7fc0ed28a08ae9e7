"""Saved annotations: one append-only log per image in the output folder, written under a per-image lock.

``<out_dir>/annotations/<image name>.jsonl`` holds one JSON object per line:

* ``{"k": "r", "key": KEY, "data": {...}}`` — an immutable record (a step of the undo history, an object version),
  written once, when it first appears;
* ``{"k": "h", "data": {...}}`` — a head: everything else (cursor, version, threshold, the keys of the records in use).

Saving appends the new records and a new head, then ``fsync``\\ s: the bytes written are proportional to the change,
not to the size of the whole state. The state is the last head whose records are all present, so a write cut short by
``kill -9`` or a power loss (a last line without its newline, or unparsable) only loses that unacknowledged write. When
dead lines (old heads, dropped steps) outweigh the live ones, or when this process has not written the file itself
(first save after a start, a torn tail, a legacy file), the file is rewritten whole: temporary file, ``fsync``,
rename, so there is never a moment without a complete file.

``<image name>.json`` files of earlier versions (one JSON document) are read, and replaced by the log at the first
save.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finecut.errors import FinecutError
from finecut.io import atomic_write_bytes
from finecut.session import saved_objects

from finecut.app.progress import IN_PROGRESS, derive_status

#: Rewrite a log whole when its dead bytes exceed its live bytes plus this much.
COMPACT_SLACK_BYTES = 1 << 20


@dataclass
class _Log:
    """What this process knows about a log file it wrote: its size and the byte size of each live record."""

    size: int
    records: dict[str, int] = field(default_factory=dict)
    head: int = 0


@dataclass(frozen=True)
class SaveStats:
    """What one save wrote: ``bytes`` in all, and whether the file was ``rewritten`` whole."""

    bytes: int
    rewritten: bool


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


class AnnotationStore:
    """The save files of one output folder. Use :meth:`lock` around read-modify-write sequences."""

    def __init__(self, out_dir: str | Path, compact_slack: int = COMPACT_SLACK_BYTES) -> None:
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / "annotations"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.compact_slack = compact_slack
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._logs: dict[str, _Log] = {}

    def lock(self, name: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.jsonl"

    def legacy_path(self, name: str) -> Path:
        """The one-document JSON file of earlier versions."""
        return self.folder / f"{name}.json"

    # ------------------------------------------------------------------ reading
    def load(self, name: str) -> dict[str, Any] | None:
        """The saved state: the last complete head with ``"records"`` (a legacy file: its JSON as is); None if none."""
        with self.lock(name):
            path = self.path(name)
            if path.exists():
                return self._read_log(path)
            legacy = self.legacy_path(name)
            if legacy.exists():
                try:
                    data = json.loads(legacy.read_text(encoding="utf-8"))
                except (OSError, UnicodeError, json.JSONDecodeError) as exc:
                    raise FinecutError(f"{legacy}: saved annotation is unreadable ({exc}); move it away to start "
                                       "over") from exc
                if not isinstance(data, dict):
                    raise FinecutError(f"{legacy}: saved annotation is not a JSON object")
                return data
            return None

    @staticmethod
    def _read_log(path: Path) -> dict[str, Any]:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise FinecutError(f"{path}: saved annotation is unreadable ({exc}); move it away to start over") from exc
        records: dict[str, Any] = {}
        best: dict[str, Any] | None = None
        for line in raw.split(b"\n")[:-1]:  # the part after the last newline is a torn write: never acknowledged
            try:
                item = json.loads(line)
                kind = item["k"]
            except (ValueError, TypeError, KeyError):
                continue  # a damaged line: the heads that need it are skipped below
            if kind == "r" and isinstance(item.get("key"), str):
                records[item["key"]] = item.get("data")
            elif kind == "h" and isinstance(item.get("data"), dict):
                needed = item["data"].get("records", [])
                if all(key in records for key in needed):
                    best = {**item["data"], "records": {key: records[key] for key in needed}}
        if best is None:
            raise FinecutError(f"{path}: saved annotation has no complete state; move it away to start over")
        return best

    # ------------------------------------------------------------------ writing
    def save(self, name: str, head: Mapping[str, Any],
             records: Mapping[str, Callable[[], Mapping[str, Any]]]) -> SaveStats:
        """Save ``head`` and ``records`` (``{key: make_record}``; a key must always name the same content).

        Appends only the records this file does not hold yet, and the head; rewrites the file whole when needed
        (see the module docstring). Durable when it returns (``fsync``).
        """
        with self.lock(name):
            full_head = {**head, "records": list(records), "image": name, "saved_at": time.time()}
            log = self._logs.get(name)
            path = self.path(name)
            if log is not None and self._can_append(path, log, records):
                return self._append(path, log, full_head, records)
            return self._rewrite(name, path, full_head, records)

    def _can_append(self, path: Path, log: _Log, records: Mapping[str, Any]) -> bool:
        try:
            if path.stat().st_size != log.size:
                return False  # changed behind our back
        except OSError:
            return False
        live = log.head + sum(log.records.get(key, 0) for key in records)
        return log.size - live <= live + self.compact_slack

    def _append(self, path: Path, log: _Log, head: Mapping[str, Any],
                records: Mapping[str, Callable[[], Mapping[str, Any]]]) -> SaveStats:
        new = {key: _line({"k": "r", "key": key, "data": make()}) for key, make in records.items()
               if key not in log.records}
        head_line = _line({"k": "h", "data": head})
        data = b"".join([*new.values(), head_line])
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        log.size += len(data)
        log.records.update({key: len(line) for key, line in new.items()})
        log.head = len(head_line)
        return SaveStats(len(data), False)

    def _rewrite(self, name: str, path: Path, head: Mapping[str, Any],
                 records: Mapping[str, Callable[[], Mapping[str, Any]]]) -> SaveStats:
        lines = {key: _line({"k": "r", "key": key, "data": make()}) for key, make in records.items()}
        head_line = _line({"k": "h", "data": head})
        data = b"".join([*lines.values(), head_line])
        atomic_write_bytes(path, data, overwrite=True)
        self._logs[name] = _Log(len(data), {key: len(line) for key, line in lines.items()}, len(head_line))
        legacy = self.legacy_path(name)
        if legacy.exists():  # its content is now in the log, durably
            legacy.unlink()
        return SaveStats(len(data), True)

    # ------------------------------------------------------------------ summaries
    def summary(self, name: str) -> dict[str, Any]:
        """Object count, labels and status (:mod:`finecut.app.progress`) of a saved annotation."""
        try:
            data = self.load(name)
            objects = saved_objects(data.get("session", data)) if data else []
        except FinecutError as exc:
            return {"objects": 0, "status": IN_PROGRESS, "error": str(exc)}
        status = derive_status(data, bool(objects))
        if not objects:
            return {"objects": 0, "status": status}
        return {"objects": len(objects), "labels": sorted({o["label"] for o in objects}), "status": status}
