"""What the annotation app does, independent of HTTP: sessions per image, saved after every action.

Every action on an image runs under that image's lock: load (memory, else the save file), check the version the
client saw, apply, save (:class:`~finecut.app.store.AnnotationStore`: appends what changed, durably), answer. So
concurrent requests on one image are serialised, a write based on a stale state is refused (:class:`StaleVersion`),
and a save file always holds a complete, consistent state. The image is encoded once per (model, image) through
:class:`~finecut.server.cache.PredictorCache`.

With a label set (:mod:`finecut.app.labels`) every label given must be one of its classes, and exports use its
category ids. Each image has a status (:mod:`finecut.app.progress`), saved in its save file's head. Objects imported
from COCO files or PNG masks (:mod:`finecut.app.importing`) are added as one undoable step per image.
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

from finecut.engines.base import Engine, EngineOutput
from finecut.errors import FinecutError
from finecut.export import FORMATS, ExportImage, ExportObject, export_images, rle_to_mask
from finecut.importers.base import ImportedObject
from finecut.io import image_header
from finecut.predictor import Predictor
from finecut.session import Session, saved_objects
from finecut.server.cache import EngineFactory, ModelPool, PredictorCache

from finecut.app.folder import ImageFolder, Limits
from finecut.app.labels import LabelSet
from finecut.app.progress import CHOSEN, DONE, IN_PROGRESS, NEW, check_chosen, derive_status, progress_counts
from finecut.app.store import AnnotationStore

#: Most steps kept in an image's undo history (older ones are dropped).
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
    max_history: int = MAX_HISTORY
    labels: LabelSet | None = None

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


class NoAlpha(FinecutError):
    """The current step of an image has no alpha matte (its model predicts none, or there is no prediction)."""


class StaleVersion(FinecutError):
    """A write based on an older version of the image's annotation state (another tab or window changed it)."""

    def __init__(self, name: str, expected: int, current: int) -> None:
        super().__init__(f"{name} was changed in another tab or window (this page had version {expected}, the "
                         f"saved state is version {current}); the page reloads the current state")
        self.current = current


@dataclass
class _Entry:
    name: str
    session: Session
    key: tuple
    saved_version: int | None = None  # the session version last saved (None: never saved by this process)
    status: str | None = None  # the status a person chose (done / skipped); None: derived from the annotations


class _SizeOnly(Engine):
    """Stands in for a model where a session is only loaded, changed without predicting, and saved (imports)."""

    name = "size-only"

    def encode_image(self, image: np.ndarray) -> Any:
        return None

    def predict(self, image: np.ndarray, features: Any, prompts: Any, previous: Any) -> EngineOutput:
        raise FinecutError("this session was loaded for an import and cannot predict")


def _session_status(session: Session, chosen: str | None) -> str:
    if chosen is not None:
        return chosen
    return IN_PROGRESS if session.objects or len(session.history) > 1 else NEW


class AnnotationService:
    """Sessions of the images of one folder. Methods raise :class:`FinecutError` on bad input.

    Every state carries the session's ``version``; an action given ``expected`` (the version the client saw) that
    is not the current one raises :class:`StaleVersion` before anything changes.
    """

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.folder = ImageFolder(config.image_dir, config.limits)
        self.store = AnnotationStore(config.output_dir)
        self.pool = ModelPool(config.model_factory, config.models, config.default_model)
        self.cache = PredictorCache(self.pool, config.cache_size)
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()
        self._sessions_lock = threading.Lock()
        self._export_lock = threading.Lock()  # one export at a time: each replaces the export folder

    # ----------------------------------------------------------------- labels
    @property
    def labels(self) -> LabelSet | None:
        return self.config.labels

    def _check_label(self, label: str) -> str:
        text = label.strip()
        return self.labels.check(text) if self.labels is not None and text else label

    @property
    def default_label(self) -> str:
        return self.labels.default if self.labels is not None else "object"

    # ----------------------------------------------------------------- images
    def list_images(self) -> list[dict[str, Any]]:
        return [{"name": n, **self.store.summary(n)} for n in self.folder.names()]

    def progress(self, images: Iterable[dict[str, Any]] | None = None) -> dict[str, int]:
        """Counts of images per status over the folder."""
        listing = self.list_images() if images is None else images
        return progress_counts(im["status"] for im in listing)

    def image_path(self, name: str) -> Path:
        path = self.folder.path(name)
        self.folder.check_size(path)
        return path

    def _file_key(self, name: str) -> tuple:
        st = self.folder.path(name).stat()
        return (name, st.st_mtime_ns, st.st_size)

    # --------------------------------------------------------------- sessions
    def _model_name(self, wanted: str | None) -> str:
        return wanted if wanted in self.pool.names else self.pool.default

    def _predictor(self, name: str, key: tuple, model: str) -> tuple[Predictor, float]:
        """The predictor of (model, image), and the seconds spent encoding the image (0 when cached)."""
        cached, hit = self.cache.get(model, key, lambda: self.folder.read(name))
        return cached.predictor, (0.0 if hit else cached.encode_seconds)

    def _entry(self, name: str) -> tuple[_Entry, float]:
        """The session of ``name`` (from memory, else the save file) with its model's predictor attached."""
        key = self._file_key(name)
        with self._sessions_lock:
            entry = self._sessions.get(name)
            if entry is not None and entry.key != key:  # the file changed on disk: start from the saved state
                self._sessions.pop(name)
                self.cache.drop(entry.key)
                entry = None
            if entry is not None:
                self._sessions.move_to_end(name)
        if entry is not None:
            return entry, self._attach(entry)
        saved = self.store.load(name)
        legacy = bool(saved) and "session" in saved  # the one-document save file of earlier versions
        data = (saved or {}).get("session") if legacy else saved
        saved_model = (saved or {}).get("model")
        model = self._model_name(saved_model)
        predictor, encode = self._predictor(name, key, model)
        if data:
            session = Session.from_dict(data, predictor, model=model if legacy else None,
                                        max_history=self.config.max_history)
            entry = _Entry(name, session, key, saved_version=None if legacy else session.version,
                           status=saved.get("status") if saved.get("status") in CHOSEN else None)
            if session.model != model:  # saved with a model this server does not offer: re-run with the default
                session.refresh(model=model)
        else:
            session = Session(predictor, threshold=self.config.threshold, model=model,
                              max_history=self.config.max_history, default_label=self.default_label)
            entry = _Entry(name, session, key, saved_version=session.version)
        with self._sessions_lock:
            self._sessions[name] = entry
            while len(self._sessions) > max(self.config.cache_size, 2):
                self._sessions.popitem(last=False)
        return entry, encode

    def _attach(self, entry: _Entry) -> float:
        """Attach the predictor of the session's current model (it changes with model switches, undo and redo)."""
        predictor, encode = self._predictor(entry.name, entry.key, self._model_name(entry.session.model))
        if entry.session.predictor is not predictor:
            entry.session.attach(predictor)
        return encode

    def _switch_model(self, entry: _Entry, model: str) -> float:
        """Re-run the current prompts with ``model``: one undoable step."""
        self.pool.get(model)  # fail early with a clear message
        predictor, encode = self._predictor(entry.name, entry.key, model)
        entry.session.attach(predictor)
        entry.session.refresh(model=model)
        return encode

    def _save(self, entry: _Entry) -> None:
        head, records = entry.session.save_parts()
        if entry.status is not None:
            head["status"] = entry.status
        self.store.save(entry.name, head, records)
        entry.saved_version = entry.session.version

    def _run(self, name: str, action: Callable[[Session], Any], model: str | None = None,
             expected: int | None = None, objects: bool = False) -> dict[str, Any]:
        with self.store.lock(name):
            start = time.perf_counter()
            entry, encode = self._entry(name)
            session = entry.session
            if expected is not None and expected != session.version:
                raise StaleVersion(name, expected, session.version)
            before = session.prediction
            before_objects = [o.uid for o in session.objects]
            if model is not None and model != session.model:
                encode += self._switch_model(entry, model)
            action(session)
            encode += self._attach(entry)
            if session.version != entry.saved_version:
                self._save(entry)
            pred = session.prediction
            changed_objects = before_objects != [o.uid for o in session.objects]
            payload = self.state(entry, include_objects=objects or changed_objects)
            fresh = pred is not None and pred is not before and not pred.state.get("restored")
            payload["timing"] = {
                "model_ms": round(pred.seconds * 1000, 2) if fresh else None,
                "encode_ms": round(encode * 1000, 2) if encode else None,
                "server_ms": round((time.perf_counter() - start) * 1000, 2),
            }
            return payload

    def state(self, entry: _Entry, include_objects: bool = True) -> dict[str, Any]:
        s = entry.session
        h, w = s.image_size
        prompts = s.prompts
        mask = s.mask
        editing = s.editing
        out: dict[str, Any] = {
            "image": entry.name,
            "width": w,
            "height": h,
            "model": self._model_name(s.model),
            "version": s.version,
            "threshold": s.threshold,
            "current": {
                "runs": mask_runs(mask),
                "area": int(mask.sum()),
                "clicks": [{"x": c.x, "y": c.y, "kind": c.kind.value} for c in prompts.clicks],
                "box": list(prompts.box.as_tuple()) if prompts.box is not None else None,
                "scribbles": [{"points": [list(p) for p in sc.points], "positive": sc.positive, "width": sc.width}
                              for sc in prompts.scribbles],
                "has_prior": prompts.prior_mask is not None,
                "has_alpha": s.alpha_png is not None,
                "can_undo": s.can_undo,
                "can_redo": s.can_redo,
                "steps": len(s.history) - 1,
                "cursor": s.cursor,
                "action": s.step.action,
            },
            "editing": None if editing is None else {"id": editing.id, "label": editing.label},
            "object_ids": [o.id for o in s.objects],
            "status": _session_status(s, entry.status),
        }
        if include_objects:
            out["objects"] = [
                {"id": o.id, "label": o.label, "area": o.area, "runs": mask_runs(o.mask),
                 "clicks": len(o.prompts.clicks), "imported": o.prompts.is_empty}
                for o in s.objects
            ]
        return out

    def alpha_png(self, name: str) -> tuple[bytes, int]:
        """The current step's alpha matte of image ``name`` as an 8-bit grayscale PNG at image size
        (``round(alpha * 255)``), and the version of the state it belongs to; :class:`NoAlpha` when it has none."""
        with self.store.lock(name):
            session = self._entry(name)[0].session
            png = session.alpha_png
            if png is None:
                why = ("there is no prediction" if session.prediction is None else
                       "its model gives none, or the session was reloaded from its save file, which keeps the "
                       "mattes of finished objects only")
                raise NoAlpha(f"{name}: the current step has no alpha matte ({why})")
            return png, session.version

    # ----------------------------------------------------------------- actions
    # ``expected``: the version the client last saw (None: no check, e.g. scripts); see :class:`StaleVersion`.
    def open(self, name: str, model: str | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: None, model=model, objects=True)

    def click(self, name: str, x: float, y: float, kind: str = "positive", model: str | None = None,
              expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.add_click(x, y, kind), model, expected)

    def box(self, name: str, box: Sequence[float], model: str | None = None,
            expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.set_box(box), model, expected)

    def scribble(self, name: str, points: Sequence[Sequence[float]], positive: bool = True, width: float = 5.0,
                 model: str | None = None, expected: int | None = None) -> dict[str, Any]:
        if len(points) > self.config.max_scribble_points:
            raise FinecutError(f"a scribble may have at most {self.config.max_scribble_points} points, "
                               f"got {len(points)}")
        return self._run(name, lambda s: s.add_scribble(points, positive, width), model, expected)

    def undo(self, name: str, expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.undo(), expected=expected)

    def redo(self, name: str, expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.redo(), expected=expected)

    def reset(self, name: str, expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.reset(), expected=expected)

    def set_threshold(self, name: str, threshold: float, expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.set_threshold(threshold), expected=expected)

    def set_model(self, name: str, model: str, expected: int | None = None) -> dict[str, Any]:
        self.pool.get(model)  # fail early with a clear message
        return self._run(name, lambda s: None, model=model, expected=expected)

    def paint(self, name: str, points: Sequence[Sequence[float]], width: float = 10.0, erase: bool = False,
              expected: int | None = None) -> dict[str, Any]:
        """Add (or erase) the pixels of a brush stroke to the current object's mask, without the model."""
        if len(points) > self.config.max_scribble_points:
            raise FinecutError(f"a brush stroke may have at most {self.config.max_scribble_points} points, "
                               f"got {len(points)}")
        return self._run(name, lambda s: s.paint(points, width, erase), expected=expected)

    def finish(self, name: str, label: str | None = None, expected: int | None = None) -> dict[str, Any]:
        chosen = self._check_label(label) if label else None

        def act(s: Session) -> None:
            given = chosen
            if given is None and s.editing is None and self.labels is not None:
                given = self.labels.default
            finished.append(s.finish_object(given).id)

        finished: list[int] = []
        payload = self._run(name, act, expected=expected, objects=True)
        payload["finished_id"] = finished[0]
        return payload

    def delete_object(self, name: str, object_id: int, expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.delete_object(object_id), expected=expected, objects=True)

    def relabel_object(self, name: str, object_id: int, label: str, expected: int | None = None) -> dict[str, Any]:
        label = self._check_label(label)
        return self._run(name, lambda s: s.relabel_object(object_id, label), expected=expected, objects=True)

    def move_object(self, name: str, object_id: int, index: int, expected: int | None = None) -> dict[str, Any]:
        """Move an object to ``index`` of the drawing order (0 = bottom); the upper one wins where objects overlap."""
        return self._run(name, lambda s: s.move_object(object_id, index), expected=expected, objects=True)

    def set_status(self, name: str, status: str | None, expected: int | None = None) -> dict[str, Any]:
        """Mark an image ``done`` or ``skipped`` (None: back to new / in progress, as its annotations say); saved with
        its annotations."""
        chosen = check_chosen(status)
        with self.store.lock(name):
            entry, _ = self._entry(name)
            if expected is not None and expected != entry.session.version:
                raise StaleVersion(name, expected, entry.session.version)
            if chosen != entry.status:
                entry.status = chosen
                self._save(entry)
            return self.state(entry, include_objects=False)

    # ------------------------------------------------------------------ import
    def import_objects(self, name: str, objects: Sequence[ImportedObject]) -> dict[str, int]:
        """Add ``objects`` to image ``name`` as finished objects, in one undoable step, and save. An object equal to
        one the image already has (same label, same mask) is not added again, so importing a file twice is harmless.
        Returns ``{"added": n, "duplicates": m}``."""
        for obj in objects:
            if self.labels is not None:
                self.labels.check(obj.label)
        with self.store.lock(name):
            with self._sessions_lock:
                entry = self._sessions.get(name)
            if entry is not None and entry.key == self._file_key(name):  # open in this server: its live session
                counts: dict[str, int] = {}
                self._run(name, lambda s: counts.update(self._add_new(s, objects)))
                return counts
            return self._import_detached(name, objects)

    @staticmethod
    def _add_new(session: Session, objects: Sequence[ImportedObject]) -> dict[str, int]:
        existing = [(o.label, o.area, o.mask) for o in session.objects]
        fresh = []
        for obj in objects:
            mask = np.asarray(obj.mask, dtype=bool)
            area = int(mask.sum())
            if any(label == obj.label and a == area and np.array_equal(m, mask) for label, a, m in existing):
                continue
            existing.append((obj.label, area, mask))
            fresh.append((mask, obj.label))
        session.add_objects(fresh)
        return {"added": len(fresh), "duplicates": len(objects) - len(fresh)}

    def _import_detached(self, name: str, objects: Sequence[ImportedObject]) -> dict[str, int]:
        """Import into the save file of an image no session of this server holds, without decoding the image or
        loading a model (the caller holds the image's lock)."""
        header = image_header(self.folder.path(name), name, self.config.limits.max_pixels)
        predictor = Predictor(_SizeOnly(), honour_clicks=False)
        predictor.set_image(np.zeros((header.height, header.width, 3), np.uint8))
        saved = self.store.load(name)
        legacy = bool(saved) and "session" in saved
        data = (saved or {}).get("session") if legacy else saved
        model = self._model_name((saved or {}).get("model"))
        if data:
            session = Session.from_dict(data, predictor, model=model if legacy else None,
                                        max_history=self.config.max_history)
        else:
            session = Session(predictor, threshold=self.config.threshold, model=model,
                              max_history=self.config.max_history, default_label=self.default_label)
        counts = self._add_new(session, objects)
        if counts["added"]:
            head, records = session.save_parts()
            status = (saved or {}).get("status")
            if status:
                head["status"] = status
            self.store.save(name, head, records)
        return counts

    def reopen_object(self, name: str, object_id: int, expected: int | None = None) -> dict[str, Any]:
        return self._run(name, lambda s: s.reopen_object(object_id), expected=expected, objects=True)

    # ------------------------------------------------------------------ export
    def export(self, formats: Iterable[str] = FORMATS) -> dict[str, Any]:
        """Export the saved annotations of every image with objects (and of every image marked done, objects or not)
        into ``<out>/export``, replacing it as a whole (:func:`~finecut.export.export_images`: complete, one folder
        per image file, stable category ids: the label set's when there is one). Every image's status goes into the
        manifest, and each exported image's into its COCO entry."""
        chosen = list(formats)
        for fmt in chosen:
            if fmt not in FORMATS:
                raise FinecutError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
        with self._export_lock:
            images, skipped, statuses = [], [], {}
            for name in self.folder.names():
                try:
                    image, statuses[name] = self._export_image(name, with_alpha="png" in chosen)
                except FinecutError as exc:
                    skipped.append({"image": name, "error": str(exc)})
                    statuses[name] = IN_PROGRESS
                    continue
                if image is not None:
                    images.append(image)
            out = self.export_dir
            metadata: dict[str, Any] = {"progress": progress_counts(statuses.values()), "status": statuses}
            if self.labels is not None:
                metadata["label_set"] = self.labels.to_json()
            files = export_images(images, out, chosen, overwrite=True,
                                  label_ids=self.labels.category_ids() if self.labels is not None else None,
                                  metadata=metadata)
        return {
            "folder": str(out),
            "images": len(images),
            "objects": sum(len(i.objects) for i in images),
            "files": [p.relative_to(out).as_posix() for p in files],
            "skipped": skipped,
            "progress": metadata["progress"],
        }

    def _export_image(self, name: str, with_alpha: bool = True) -> tuple[ExportImage | None, str]:
        """The saved finished objects of ``name`` (None when it has none and is not done), and its status; with
        ``with_alpha``, the objects that have an alpha matte carry it (8-bit, for the PNG export)."""
        with self.store.lock(name):
            data = self.store.load(name)
        if not data:
            return None, NEW
        session = data.get("session", data)  # a legacy save file holds the session under "session"
        try:
            objects = tuple(ExportObject(o["id"], o["label"], rle_to_mask(o["mask"]), alpha=o.get("alpha"))
                            for o in saved_objects(session, with_alpha=with_alpha))
            status = derive_status(data, bool(objects))
            if not objects and status != DONE:
                return None, status
            return ExportImage(name, int(session["height"]), int(session["width"]), objects, status=status), status
        except (KeyError, TypeError, ValueError) as exc:
            raise FinecutError(f"{type(exc).__name__}: {exc}") from exc

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
