"""An annotation session on one image: the prompts of the current object with undo/redo, and finished objects.

A :class:`Session` wraps a :class:`~finecut.predictor.Predictor` (whose image features are computed once). Each
interaction (click, box, scribble, prior mask) appends an immutable :class:`Step` — the full prompt set of the current
object and the :class:`~finecut.predictor.Prediction` it produced — to a linear history with a cursor, so undo and redo
restore an earlier result without recomputation, and the next prediction is always fed the previous one as
``previous`` (the replay contract of the Predictor). Finishing an object stores its mask under a label and starts the
next one. The whole session serialises to a JSON-compatible dict (masks as COCO RLE) so a front end can save it after
every action and reload it later.

Example::

    import finecut
    from finecut.session import Session

    session = Session(finecut.Predictor(finecut.load_model("default")), image)
    session.add_click(120, 80)                 # positive
    session.add_click(200, 90, "negative")
    session.undo()
    obj = session.finish_object("cat")
    session.export("out/", stem="photo")       # PNG masks + COCO JSON
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from finecut.errors import FinecutError
from finecut.export import ExportImage, ExportObject, export_images
from finecut.export import mask_to_rle as encode_mask
from finecut.export import rle_to_mask as decode_mask
from finecut.predictor import Prediction, Predictor
from finecut.prompts import Box, Click, ClickKind, Prompts, Scribble, check_mask_shape

#: Version of the JSON layout written by :meth:`Session.to_dict`.
SESSION_FORMAT = 1


@dataclass(frozen=True)
class Step:
    """One entry of the history: the prompts of the current object after an action, and what they produced."""

    action: str
    prompts: Prompts
    prediction: Prediction | None


@dataclass(frozen=True)
class AnnotatedObject:
    """A finished object: its mask (bool H×W), label, id (1-based, unique within the session) and prompts."""

    id: int
    label: str
    mask: np.ndarray = field(compare=False)
    prompts: Prompts = field(default_factory=Prompts, compare=False)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


_EMPTY_STEP = Step("start", Prompts(), None)


class Session:
    """Interactive annotation of one image: current object with undo/redo, several finished objects.

    ``predictor`` is a :class:`Predictor`; if ``image`` is given it is set on the predictor (features computed once),
    otherwise the predictor must already hold an image. ``threshold`` turns probabilities into the mask.
    """

    def __init__(
        self,
        predictor: Predictor,
        image: np.ndarray | None = None,
        threshold: float = 0.5,
        default_label: str = "object",
    ) -> None:
        if not isinstance(predictor, Predictor):
            raise FinecutError(f"Session needs a Predictor, got {type(predictor).__name__}")
        if image is not None:
            predictor.set_image(image)
        self._predictor = predictor
        self._size = predictor.image_size
        self._threshold = _check_threshold(threshold)
        self.default_label = default_label
        self._history: list[Step] = [_EMPTY_STEP]
        self._cursor = 0
        self._objects: list[AnnotatedObject] = []
        self._next_id = 1

    # ------------------------------------------------------------------ state
    @property
    def predictor(self) -> Predictor:
        return self._predictor

    def attach(self, predictor: Predictor) -> None:
        """Use another Predictor holding the same image (e.g. after a cache eviction or a model change)."""
        if not isinstance(predictor, Predictor):
            raise FinecutError(f"Session needs a Predictor, got {type(predictor).__name__}")
        if predictor.image_size != self._size:
            raise FinecutError(
                f"predictor image is {predictor.image_size[1]}x{predictor.image_size[0]}, "
                f"but this session's image is {self._size[1]}x{self._size[0]}"
            )
        self._predictor = predictor

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return self._size

    @property
    def threshold(self) -> float:
        return self._threshold

    def set_threshold(self, threshold: float) -> np.ndarray:
        """Change the probability threshold; the current mask is re-thresholded without recomputation."""
        self._threshold = _check_threshold(threshold)
        return self.mask

    @property
    def step(self) -> Step:
        return self._history[self._cursor]

    @property
    def cursor(self) -> int:
        """Index of the current step in :attr:`history` (0 = the empty start)."""
        return self._cursor

    @property
    def history(self) -> tuple[Step, ...]:
        """Every step so far (the ones after the cursor are the redo stack)."""
        return tuple(self._history)

    @property
    def prompts(self) -> Prompts:
        """The prompts of the current object."""
        return self.step.prompts

    @property
    def clicks(self) -> tuple[Click, ...]:
        return self.step.prompts.clicks

    @property
    def prediction(self) -> Prediction | None:
        """The prediction for the current object (None before the first interaction or after a reset)."""
        return self.step.prediction

    @property
    def mask(self) -> np.ndarray:
        """The current object's mask (bool H×W) at the session threshold; all False when there is none."""
        pred = self.prediction
        if pred is None:
            return np.zeros(self._size, dtype=bool)
        if pred.threshold == self._threshold:
            return np.asarray(pred.mask, dtype=bool)
        return np.asarray(pred.probs) > self._threshold

    @property
    def can_undo(self) -> bool:
        return self._cursor > 0

    @property
    def can_redo(self) -> bool:
        return self._cursor < len(self._history) - 1

    @property
    def objects(self) -> tuple[AnnotatedObject, ...]:
        return tuple(self._objects)

    # ------------------------------------------------------------ interaction
    def _predict(self, prompts: Prompts) -> Prediction | None:
        if prompts.is_empty:
            return None
        return self._predictor.predict(
            clicks=prompts.clicks,
            box=prompts.box,
            scribbles=prompts.scribbles,
            prior_mask=prompts.prior_mask,
            previous=self.prediction,
            threshold=self._threshold,
        )

    def _push(self, action: str, prompts: Prompts) -> Prediction | None:
        height, width = self._size
        prompts.validate(height, width)
        prediction = self._predict(prompts)
        del self._history[self._cursor + 1 :]
        self._history.append(Step(action, prompts, prediction))
        self._cursor += 1
        return prediction

    def add_click(self, x: float, y: float, kind: ClickKind | str | bool = ClickKind.POSITIVE) -> Prediction:
        """Add a click (positive, negative or tolerant) to the current object and predict."""
        click = Click(float(x), float(y), kind)
        prediction = self._push("click", replace(self.prompts, clicks=self.prompts.clicks + (click,)))
        assert prediction is not None
        return prediction

    def set_box(self, box: Box | Sequence[float] | None) -> Prediction | None:
        """Set (or with None, remove) the box of the current object and predict."""
        if box is not None and not isinstance(box, Box):
            values = tuple(float(v) for v in box)
            if len(values) != 4:
                raise FinecutError(f"a box needs 4 numbers (x0, y0, x1, y1), got {values!r}")
            box = Box(*values)
        return self._push("box", replace(self.prompts, box=box))

    def add_scribble(
        self, points: Iterable[Sequence[float]], positive: bool = True, width: float = 5.0
    ) -> Prediction:
        """Add a free-hand stroke (object if ``positive``, else background) and predict."""
        scribble = Scribble(tuple((float(p[0]), float(p[1])) for p in points), bool(positive), float(width))
        prediction = self._push("scribble", replace(self.prompts, scribbles=self.prompts.scribbles + (scribble,)))
        assert prediction is not None
        return prediction

    def set_prior_mask(self, mask: np.ndarray | None) -> Prediction | None:
        """Start from (or with None, drop) a prior mask for the current object, and predict."""
        prior = None
        if mask is not None:
            prior = np.asarray(mask).astype(bool)
            check_mask_shape(prior, self._size, what="prior mask")
        return self._push("prior_mask", replace(self.prompts, prior_mask=prior))

    def refresh(self) -> Prediction | None:
        """Predict the current prompts again from scratch (after a model change), as a new undoable step."""
        prompts = self.prompts
        height, width = self._size
        prompts.validate(height, width)
        prediction = None
        if not prompts.is_empty:
            prediction = self._predictor.predict(
                clicks=prompts.clicks,
                box=prompts.box,
                scribbles=prompts.scribbles,
                prior_mask=prompts.prior_mask,
                previous=None,
                threshold=self._threshold,
            )
        del self._history[self._cursor + 1 :]
        self._history.append(Step("refresh", prompts, prediction))
        self._cursor += 1
        return prediction

    def undo(self) -> Prediction | None:
        """Go back one step (no recomputation); returns the restored prediction."""
        if not self.can_undo:
            raise FinecutError("nothing to undo")
        self._cursor -= 1
        return self.prediction

    def redo(self) -> Prediction | None:
        """Go forward one undone step (no recomputation); returns the restored prediction."""
        if not self.can_redo:
            raise FinecutError("nothing to redo")
        self._cursor += 1
        return self.prediction

    def reset(self) -> None:
        """Clear the current object's prompts; undoable (it is a step of the history)."""
        if self.prompts.is_empty and self.prediction is None:
            return
        del self._history[self._cursor + 1 :]
        self._history.append(Step("reset", Prompts(), None))
        self._cursor += 1

    # ---------------------------------------------------------------- objects
    def finish_object(self, label: str | None = None) -> AnnotatedObject:
        """Store the current mask as a finished object under ``label`` and start a new object (empty history)."""
        mask = self.mask
        if not mask.any():
            raise FinecutError("the current object is empty: add a click, box or scribble before finishing it")
        obj = AnnotatedObject(self._next_id, _clean_label(label or self.default_label), mask.copy(), self.prompts)
        self._objects.append(obj)
        self._next_id += 1
        self._history = [_EMPTY_STEP]
        self._cursor = 0
        return obj

    def add_object(self, mask: np.ndarray, label: str | None = None) -> AnnotatedObject:
        """Add a finished object from an existing mask (an import), without touching the current object."""
        arr = np.asarray(mask).astype(bool)
        check_mask_shape(arr, self._size, what="object mask")
        obj = AnnotatedObject(self._next_id, _clean_label(label or self.default_label), arr.copy())
        self._objects.append(obj)
        self._next_id += 1
        return obj

    def _index(self, object_id: int) -> int:
        for i, obj in enumerate(self._objects):
            if obj.id == object_id:
                return i
        known = ", ".join(str(o.id) for o in self._objects) or "none"
        raise FinecutError(f"no object with id {object_id} (objects: {known})")

    def get_object(self, object_id: int) -> AnnotatedObject:
        return self._objects[self._index(object_id)]

    def delete_object(self, object_id: int) -> AnnotatedObject:
        """Remove a finished object; returns it."""
        return self._objects.pop(self._index(object_id))

    def relabel_object(self, object_id: int, label: str) -> AnnotatedObject:
        i = self._index(object_id)
        self._objects[i] = replace(self._objects[i], label=_clean_label(label))
        return self._objects[i]

    def instance_map(self) -> np.ndarray:
        """Instance-id map (uint16 H×W): 0 background, each finished object's id; later objects on top."""
        out = np.zeros(self._size, dtype=np.uint16)
        for obj in self._objects:
            out[obj.mask] = obj.id
        return out

    # ---------------------------------------------------------------- export
    def export(
        self,
        out_dir: str | Path,
        stem: str = "image",
        image_file: str | None = None,
        formats: Iterable[str] = ("png", "coco_rle", "coco_polygons"),
        overwrite: bool = True,
    ) -> list[Path]:
        """Write the finished objects with :mod:`finecut.export`; returns the files written."""
        height, width = self._size
        image = ExportImage(
            file_name=image_file or f"{stem}.png",
            height=height,
            width=width,
            objects=tuple(ExportObject(o.id, o.label, o.mask) for o in self._objects),
            stem=stem,
        )
        return export_images([image], out_dir, formats=formats, overwrite=overwrite)

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description of the whole session (masks as COCO RLE)."""
        height, width = self._size
        return {
            "format": SESSION_FORMAT,
            "height": height,
            "width": width,
            "threshold": self._threshold,
            "default_label": self.default_label,
            "next_id": self._next_id,
            "cursor": self._cursor,
            "history": [_step_to_dict(s) for s in self._history],
            "objects": [
                {
                    "id": o.id,
                    "label": o.label,
                    "mask": encode_mask(o.mask),
                    "prompts": prompts_to_dict(o.prompts),
                }
                for o in self._objects
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], predictor: Predictor) -> "Session":
        """Rebuild a session saved by :meth:`to_dict` on ``predictor`` (which must hold the same image).

        Restored predictions carry the saved mask as their probabilities and any JSON-serialisable engine state, so
        undo/redo and the next click work without replaying the history.
        """
        try:
            if int(data.get("format", 0)) != SESSION_FORMAT:
                raise FinecutError(f"unsupported session format {data.get('format')!r} (expected {SESSION_FORMAT})")
            height, width = int(data["height"]), int(data["width"])
            if predictor.image_size != (height, width):
                raise FinecutError(
                    f"saved session is for a {width}x{height} image, but the predictor holds a "
                    f"{predictor.image_size[1]}x{predictor.image_size[0]} image"
                )
            session = cls(predictor, threshold=float(data.get("threshold", 0.5)),
                          default_label=str(data.get("default_label", "object")))
            history = [_step_from_dict(s, (height, width)) for s in data.get("history", [])] or [_EMPTY_STEP]
            cursor = int(data.get("cursor", len(history) - 1))
            if not 0 <= cursor < len(history):
                raise FinecutError(f"history cursor {cursor} is out of range 0..{len(history) - 1}")
            session._history = history
            session._cursor = cursor
            objects = []
            for item in data.get("objects", []):
                mask = decode_mask(item["mask"])
                check_mask_shape(mask, (height, width), what=f"object {item.get('id')} mask")
                objects.append(AnnotatedObject(int(item["id"]), _clean_label(item["label"]), mask,
                                               prompts_from_dict(item.get("prompts") or {}, (height, width))))
            ids = [o.id for o in objects]
            if len(set(ids)) != len(ids):
                raise FinecutError("saved session has duplicate object ids")
            session._objects = objects
            session._next_id = max([int(data.get("next_id", 1)), *(i + 1 for i in ids)])
            return session
        except FinecutError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise FinecutError(f"corrupt session data: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes, predictor: Predictor) -> "Session":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FinecutError(f"session file is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise FinecutError("session file must hold a JSON object")
        return cls.from_dict(data, predictor)


# ---------------------------------------------------------------------- helpers
def _check_threshold(value: float) -> float:
    t = float(value)
    if not 0.0 <= t <= 1.0:
        raise FinecutError(f"threshold must be in [0, 1], got {value}")
    return t


def _clean_label(label: Any) -> str:
    text = str(label).strip()
    if not text:
        raise FinecutError("an object label must not be empty")
    if len(text) > 200:
        raise FinecutError(f"object label is too long ({len(text)} characters, at most 200)")
    return text


def prompts_to_dict(prompts: Prompts) -> dict[str, Any]:
    out: dict[str, Any] = {"clicks": [{"x": c.x, "y": c.y, "kind": c.kind.value} for c in prompts.clicks]}
    if prompts.box is not None:
        out["box"] = list(prompts.box.as_tuple())
    if prompts.scribbles:
        out["scribbles"] = [
            {"points": [list(p) for p in s.points], "positive": s.positive, "width": s.width} for s in prompts.scribbles
        ]
    if prompts.prior_mask is not None:
        out["prior_mask"] = encode_mask(prompts.prior_mask)
    return out


def prompts_from_dict(data: Mapping[str, Any], size: tuple[int, int]) -> Prompts:
    clicks = tuple(Click(float(c["x"]), float(c["y"]), c.get("kind", "positive")) for c in data.get("clicks", []))
    box = Box(*(float(v) for v in data["box"])) if data.get("box") is not None else None
    scribbles = tuple(
        Scribble(tuple((float(p[0]), float(p[1])) for p in s["points"]), bool(s.get("positive", True)),
                 float(s.get("width", 5.0)))
        for s in data.get("scribbles", [])
    )
    prior = decode_mask(data["prior_mask"]) if data.get("prior_mask") is not None else None
    prompts = Prompts(clicks=clicks, box=box, scribbles=scribbles, prior_mask=prior)
    return prompts.validate(*size)


def _json_state(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def _step_to_dict(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"action": step.action, "prompts": prompts_to_dict(step.prompts)}
    if step.prediction is not None:
        out["prediction"] = {
            "mask": encode_mask(step.prediction.mask),
            "threshold": step.prediction.threshold,
            "seconds": step.prediction.seconds,
            "state": _json_state(step.prediction.state),
        }
    return out


def _step_from_dict(data: Mapping[str, Any], size: tuple[int, int]) -> Step:
    prompts = prompts_from_dict(data.get("prompts") or {}, size)
    prediction = None
    if data.get("prediction") is not None:
        p = data["prediction"]
        mask = decode_mask(p["mask"])
        check_mask_shape(mask, size, what="saved prediction mask")
        prediction = Prediction(
            mask=mask,
            probs=mask.astype(np.float32),
            prompts=prompts,
            threshold=float(p.get("threshold", 0.5)),
            state={**dict(p.get("state") or {}), "restored": True},
            seconds=float(p.get("seconds", 0.0)),
        )
    return Step(str(data.get("action", "step")), prompts, prediction)
