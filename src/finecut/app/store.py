"""Saved annotations: one JSON file per image in the output folder, written atomically under a per-image lock."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from finecut.errors import FinecutError
from finecut.io import atomic_write_bytes


class AnnotationStore:
    """``<out_dir>/annotations/<image name>.json`` files. Use :meth:`lock` around read-modify-write sequences."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / "annotations"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(name, threading.RLock())

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.path(name)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeError, json.JSONDecodeError) as exc:
            raise FinecutError(f"{path}: saved annotation is unreadable ({exc}); move it away to start over") from exc
        if not isinstance(data, dict):
            raise FinecutError(f"{path}: saved annotation is not a JSON object")
        return data

    def save(self, name: str, data: dict[str, Any]) -> Path:
        payload = dict(data, image=name, saved_at=time.time())
        return atomic_write_bytes(self.path(name), json.dumps(payload, separators=(",", ":")).encode("utf-8"),
                                  overwrite=True)

    def summary(self, name: str) -> dict[str, Any]:
        """Object count and labels of a saved annotation, without decoding masks (empty if none or unreadable)."""
        try:
            data = self.load(name)
        except FinecutError as exc:
            return {"objects": 0, "error": str(exc)}
        if not data:
            return {"objects": 0}
        objects = (data.get("session") or {}).get("objects") or []
        return {"objects": len(objects), "labels": sorted({str(o.get("label")) for o in objects})}
