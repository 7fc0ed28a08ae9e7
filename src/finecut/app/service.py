"""What the annotation app does, independent of HTTP: sessions per image, saved after every action.

Every action on an image runs under that image's lock: load (memory, else the saved JSON), apply, save atomically,
answer. So concurrent requests on one image are serialised and a saved file is always a complete, consistent JSON.
The image is encoded once per (model, image) through :class:`~finecut.server.cache.PredictorCache`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finecut.errors import FinecutError
from finecut.export import FORMATS, ExportImage, ExportObject, export_images, rle_to_mask
from finecut.session import Session
from finecut.server.cache import EngineFactory, ModelPool, PredictorCache

from finecut.app.folder import ImageFolder, Limits
from finecut.app.store import AnnotationStore

#: Most steps kept in one object's history (older ones are dropped from the undo stack).
MAX_HISTORY = 200


@dataclass
class AppConfig:
    """Settings of ``finecut app``. ``out_dir`` defaults to ``<image_dir>/.finecut``."""

    image_dir: Path
    out_dir: Path | None = None
    default_model: str = "default"
    models: Sequence[str] | None = None
    model_factory: EngineFactory | None = None
    threshold: float = 0.5
    cache_size: int = 4
    limits: Limits = field(default_factory=Limits)
    max_scribble_points: int = 20_000

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir is not None else Path(self.image_dir) / ".finecut"


def mask_runs(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a bool mask, alternating background/object and starting with background."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if not flat[0] else [0, *runs]


@dataclass
class _Entry:
    session: Session
    model: str
    key: tuple


class AnnotationService:
    """Sessions of the images of one folder. Methods raise :class:`FinecutError` on bad input."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.folder = ImageFolder(config.image_dir, config.limits)
        self.store = AnnotationStore(config.output_dir)
        self.pool = ModelPool(config.model_factory, config.models, config.default_model)
        self.cache = PredictorCache(self.pool, config.cache_size)
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()
        self._sessions_lock = threading.Lock()

    # ----------------------------------------------------------------- images
    def list_images(self) -> list[dict[str, Any]]:
        return [{"name": n, **self.store.summary(n)} for n in self.folder.names()]

    def image_path(self, name: str) -> Path:
        path = self.folder.path(name)
        self.folder.check_size(path)
        return path

    def _file_key(self, name: str) -> tuple:
        st = self.folder.path(name).stat()
        return (name, st.st_mtime_ns, st.st_size)

    # --------------------------------------------------------------- sessions
    def _entry(self, name: str, model: str | None) -> tuple[_Entry, float | None, bool]:
        """The session of ``name`` with a predictor for ``model`` attached; also the encode time on a cache miss,
        and whether the model changed (the prompts were re-run)."""
        key = self._file_key(name)
        with self._sessions_lock:
            entry = self._sessions.get(name)
            if entry is not None and entry.key != key:  # the file changed on disk: start from the saved JSON
                self._sessions.pop(name)
                self.cache.drop(entry.key)
                entry = None
        saved = None
        if entry is None:
            saved = self.store.load(name)
        wanted = model or (entry.model if entry else None) or (saved or {}).get("model") or self.pool.default
        if wanted not in self.pool.names:
            wanted = self.pool.default if model is None else wanted
        cached, hit = self.cache.get(wanted, key, lambda: self.folder.read(name))
        encode = None if hit else cached.encode_seconds
        changed = False
        if entry is None:
            previous_model = (saved or {}).get("model")
            if saved and saved.get("session"):
                session = Session.from_dict(saved["session"], cached.predictor)
                if previous_model and previous_model != wanted and not session.prompts.is_empty:
                    session.refresh()  # opened with another model than the saved one: re-run the prompts
                    changed = True
            else:
                session = Session(cached.predictor, threshold=self.config.threshold)
            entry = _Entry(session, wanted, key)
            with self._sessions_lock:
                self._sessions[name] = entry
                while len(self._sessions) > max(self.config.cache_size, 2):
                    self._sessions.popitem(last=False)
        else:
            entry.session.attach(cached.predictor)
            if wanted != entry.model:
                entry.model = wanted
                entry.session.refresh()
                changed = True
        with self._sessions_lock:
            if name in self._sessions:
                self._sessions.move_to_end(name)
        return entry, encode, changed

    def _save(self, name: str, entry: _Entry) -> None:
        hist = entry.session
        if len(hist.history) > MAX_HISTORY:
            data = hist.to_dict()
            drop = len(data["history"]) - MAX_HISTORY
            data["history"] = data["history"][drop:]
            data["cursor"] = max(0, data["cursor"] - drop)
        else:
            data = hist.to_dict()
        self.store.save(name, {"model": entry.model, "session": data})

    def _run(self, name: str, model: str | None, action: Callable[[Session], Any], save: bool = True,
             objects: bool = False) -> dict[str, Any]:
        with self.store.lock(name):
            start = time.perf_counter()
            entry, encode, changed = self._entry(name, model)
            before = entry.session.prediction
            action(entry.session)
            pred = entry.session.prediction
            if save or changed:
                self._save(name, entry)
            payload = self.state(name, entry, include_objects=objects)
            payload["timing"] = {
                "model_ms": round(pred.seconds * 1000, 2) if pred is not None and (pred is not before or changed)
                else None,
                "encode_ms": None if encode is None else round(encode * 1000, 2),
                "server_ms": round((time.perf_counter() - start) * 1000, 2),
            }
            return payload

    def state(self, name: str, entry: _Entry, include_objects: bool = True) -> dict[str, Any]:
        s = entry.session
        h, w = s.image_size
        prompts = s.prompts
        out: dict[str, Any] = {
            "image": name,
            "width": w,
            "height": h,
            "model": entry.model,
            "threshold": s.threshold,
            "current": {
                "runs": mask_runs(s.mask),
                "area": int(s.mask.sum()),
                "clicks": [{"x": c.x, "y": c.y, "kind": c.kind.value} for c in prompts.clicks],
                "box": list(prompts.box.as_tuple()) if prompts.box is not None else None,
                "scribbles": [{"points": [list(p) for p in sc.points], "positive": sc.positive, "width": sc.width}
                              for sc in prompts.scribbles],
                "has_prior": prompts.prior_mask is not None,
                "can_undo": s.can_undo,
                "can_redo": s.can_redo,
                "steps": len(s.history) - 1,
                "cursor": s.cursor,
            },
            "object_ids": [o.id for o in s.objects],
        }
        if include_objects:
            out["objects"] = [
                {"id": o.id, "label": o.label, "area": o.area, "runs": mask_runs(o.mask)} for o in s.objects
            ]
        return out

    # ----------------------------------------------------------------- actions
    def open(self, name: str, model: str | None = None) -> dict[str, Any]:
        return self._run(name, model, lambda s: None, save=False, objects=True)

    def click(self, name: str, x: float, y: float, kind: str = "positive", model: str | None = None) -> dict[str, Any]:
        return self._run(name, model, lambda s: s.add_click(x, y, kind))

    def box(self, name: str, box: Sequence[float], model: str | None = None) -> dict[str, Any]:
        return self._run(name, model, lambda s: s.set_box(box))

    def scribble(self, name: str, points: Sequence[Sequence[float]], positive: bool = True, width: float = 5.0,
                 model: str | None = None) -> dict[str, Any]:
        if len(points) > self.config.max_scribble_points:
            raise FinecutError(f"a scribble may have at most {self.config.max_scribble_points} points, "
                               f"got {len(points)}")
        return self._run(name, model, lambda s: s.add_scribble(points, positive, width))

    def undo(self, name: str) -> dict[str, Any]:
        return self._run(name, None, lambda s: s.undo())

    def redo(self, name: str) -> dict[str, Any]:
        return self._run(name, None, lambda s: s.redo())

    def reset(self, name: str) -> dict[str, Any]:
        return self._run(name, None, lambda s: s.reset())

    def set_threshold(self, name: str, threshold: float) -> dict[str, Any]:
        return self._run(name, None, lambda s: s.set_threshold(threshold))

    def set_model(self, name: str, model: str) -> dict[str, Any]:
        self.pool.get(model)  # fail early with a clear message
        return self._run(name, model, lambda s: None)

    def finish(self, name: str, label: str | None = None) -> dict[str, Any]:
        def act(s: Session) -> None:
            obj = s.finish_object(label)
            finished.append(obj.id)

        finished: list[int] = []
        payload = self._run(name, None, act, objects=True)
        payload["finished_id"] = finished[0]
        return payload

    def delete_object(self, name: str, object_id: int) -> dict[str, Any]:
        return self._run(name, None, lambda s: s.delete_object(object_id), objects=True)

    def relabel_object(self, name: str, object_id: int, label: str) -> dict[str, Any]:
        return self._run(name, None, lambda s: s.relabel_object(object_id, label), objects=True)

    # ------------------------------------------------------------------ export
    def export(self, formats: Iterable[str] = FORMATS, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Export the saved annotations of ``names`` (default: every image) into ``<out>/export``."""
        chosen = list(formats)
        for fmt in chosen:
            if fmt not in FORMATS:
                raise FinecutError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
        all_names = self.folder.names()
        targets = all_names if names is None else list(names)
        images, skipped = [], []
        for name in targets:
            if name not in all_names:
                raise FinecutError(f"{name!r} is not an image of the folder")
            with self.store.lock(name):
                try:
                    data = self.store.load(name)
                except FinecutError as exc:
                    skipped.append({"image": name, "error": str(exc)})
                    continue
            if not data or not (data.get("session") or {}).get("objects"):
                continue
            sess = data["session"]
            try:
                objects = tuple(
                    ExportObject(int(o["id"]), str(o["label"]), rle_to_mask(o["mask"])) for o in sess["objects"]
                )
                images.append(ExportImage(name, int(sess["height"]), int(sess["width"]), objects))
            except (FinecutError, KeyError, TypeError, ValueError) as exc:
                skipped.append({"image": name, "error": f"{type(exc).__name__}: {exc}"})
        out = self.export_dir
        files = export_images(images, out, chosen, overwrite=True)
        return {
            "folder": str(out),
            "images": len(images),
            "objects": sum(len(i.objects) for i in images),
            "files": [p.relative_to(out).as_posix() for p in files],
            "skipped": skipped,
        }

    @property
    def export_dir(self) -> Path:
        return self.store.out_dir / "export"

    def export_file(self, relative: str) -> Path:
        """A file inside the export folder (no escaping it)."""
        root = self.export_dir.resolve()
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            raise FinecutError(f"{relative!r} is not an exported file")
        return path

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        stored = self.folder.save_upload(name, data)
        return {"name": stored, "images": self.folder.names()}
