"""An annotation session on one image: the prompts of the current object with undo/redo, and finished objects.

A :class:`Session` wraps a :class:`~finecut.predictor.Predictor` (whose image features are computed once). Every
change is an immutable :class:`Step` of one linear history with a cursor: a click, box, scribble or prior mask (the
full prompt set of the current object and what it produced), a reset, a model change, and also finishing, deleting,
relabelling, reordering, importing or reopening an object, and painting or erasing pixels of the current mask (each
step records the finished objects as they are after it). So undo and redo restore any earlier state without
recomputation, Ctrl+Z after a delete brings the object back, and the next prediction is always fed the previous one as
``previous`` (the replay contract of the Predictor).

Finished objects are kept in drawing order, bottom to top: a new object goes on top, an edited one keeps its place,
:meth:`Session.move_object` changes the order, and where objects overlap the upper one wins in
:meth:`Session.instance_map` and in exports. Correcting an existing mask: :meth:`Session.reopen_object` makes a finished
(or imported) object the current one with its mask as the prior mask, so each new click changes only the part around it
(FocalClick's Progressive Merge, in models that have it); :meth:`Session.paint` adds or erases pixels directly.

The history is kept compactly (:mod:`finecut.history`): the current step keeps its full :class:`Prediction`
(probabilities included); every other step keeps its prompts and its mask as COCO RLE (at most ``ceil(H*W/8)`` bytes,
bit-packed, whatever the mask), so a step costs a few KB instead of 5 bytes per pixel. A step restored by undo or redo
has its mask as its probabilities.

Alpha mattes: when the engine returns one (:attr:`Prediction.alpha`, e.g. FocalClick-XL's Detail-Net), the current
prediction keeps it as float32, and its step keeps it as a :class:`PackedAlpha` (8 bits, ``round(alpha * 255)``,
PNG-compressed: typically tens to hundreds of KB on a 6 MP image, against 24 MB as float32), so undo and redo bring a
step's matte back (at 8-bit precision). A finished object keeps the matte of the step it was finished from
(:attr:`AnnotatedObject.alpha`), also in saved sessions, and the PNG export writes it beside the object's mask
(:mod:`finecut.export`). Painting or erasing sets the matte to 1 / 0 under the stroke;
reopening an object makes its matte the current one again.

Every change also increments :attr:`Session.version`, so front ends can refuse writes based on a stale state. The
whole session serialises to a JSON-compatible dict (masks as COCO RLE); :meth:`Session.save_parts` gives it as a small
head plus immutable records (steps and objects, keyed by a unique id) so that a store can write only what is new.

Example::

    import finecut
    from finecut.session import Session

    session = Session(finecut.Predictor(finecut.load_model("default")), image)
    session.add_click(120, 80)                 # positive
    session.add_click(200, 90, "negative")
    session.undo()
    obj = session.finish_object("cat")
    session.undo()                             # the object is in progress again
    session.redo()
    session.export("out/", stem="photo")       # PNG masks + COCO JSON
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from finecut.errors import FinecutError
from finecut.export import ExportImage, ExportObject, export_images
from finecut.export import mask_to_rle as encode_mask
from finecut.export import rle_to_mask as decode_mask
from finecut.history import PackedMask, StoredResult
from finecut.io import encode_png
from finecut.predictor import Prediction, Predictor
from finecut.prompts import Box, Click, ClickKind, Prompts, Scribble, check_mask_shape

#: Version of the JSON layout written by :meth:`Session.to_dict` (1: before finish/delete were steps; still read).
SESSION_FORMAT = 2


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class PackedAlpha:
    """An alpha matte (float H×W in [0, 1]) kept compactly: 8 bits per pixel, ``round(alpha * 255)`` (NaN as 0), as
    an 8-bit grayscale PNG (``cv2.imencode``). A matte is mostly 0 and 255 with soft edges, so the PNG is far smaller
    than the 1 byte per pixel of the raw 8-bit matte (and the 4 of float32); :attr:`png` is also what the app serves
    and what a saved session holds."""

    shape: tuple[int, int]
    png: bytes = field(repr=False)

    @classmethod
    def pack(cls, alpha: np.ndarray) -> "PackedAlpha":
        return cls.of_uint8(alpha_to_uint8(alpha))

    @classmethod
    def of_uint8(cls, values: np.ndarray) -> "PackedAlpha":
        arr = np.asarray(values)
        if arr.ndim != 2 or arr.dtype != np.uint8:
            raise FinecutError(f"an 8-bit alpha matte must be a 2-D uint8 array, got {arr.dtype} {arr.shape}")
        return cls((int(arr.shape[0]), int(arr.shape[1])), encode_png(arr))

    @classmethod
    def from_png(cls, data: bytes, size: tuple[int, int]) -> "PackedAlpha":
        """From PNG bytes (as saved), checking from the header alone (no decoding) that it is an 8-bit grayscale PNG
        of ``size`` (height, width)."""
        if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
            raise FinecutError("saved alpha matte is not a PNG")
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        if (depth, colour) != (8, 0):
            raise FinecutError(f"saved alpha matte must be an 8-bit grayscale PNG (bit depth {depth}, colour type "
                               f"{colour})")
        if (height, width) != tuple(size):
            raise FinecutError(f"saved alpha matte is {width}x{height}, expected {size[1]}x{size[0]}")
        return cls((int(height), int(width)), bytes(data))

    def unpack_uint8(self) -> np.ndarray:
        """The matte as uint8 0–255 (H×W)."""
        out = cv2.imdecode(np.frombuffer(self.png, np.uint8), cv2.IMREAD_UNCHANGED)
        if out is None or out.dtype != np.uint8 or out.shape != self.shape:
            raise FinecutError("invalid alpha matte PNG")
        return out

    def unpack(self) -> np.ndarray:
        """The matte as float32 in [0, 1] (H×W), at 8-bit precision."""
        return self.unpack_uint8().astype(np.float32) / np.float32(255)

    @property
    def nbytes(self) -> int:
        return len(self.png)


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """``round(alpha * 255)`` as uint8 (values clipped to [0, 1], NaN as 0; computed in float64, so that it is Python's
    ``round(float(a) * 255)`` for every pixel)."""
    arr = np.asarray(alpha)
    if arr.ndim != 2:
        raise FinecutError(f"an alpha matte must be 2-D, got shape {arr.shape}")
    out = np.empty(arr.shape, np.uint8)
    rows = max(1, (1 << 20) // max(1, arr.shape[1]))  # about a million pixels at a time: 8 MB of float64
    for y in range(0, arr.shape[0], rows):
        block = np.nan_to_num(arr[y : y + rows].astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(block, 0.0, 1.0, out=block)
        block *= 255.0
        np.rint(block, out=block)
        out[y : y + rows] = block
    return out


@dataclass(frozen=True)
class AnnotatedObject:
    """A finished object: its mask (bool H×W), label, id (1-based, unique within the session) and prompts.

    ``uid`` identifies this version of the object (a relabel or an edit makes a new version with the same ``id``).
    ``alpha`` is the alpha matte of the prediction it was finished from, when the engine gave one (8-bit PNG,
    :class:`PackedAlpha`), else None.
    """

    id: int
    label: str
    mask: np.ndarray = field(compare=False)
    prompts: Prompts = field(default_factory=Prompts, compare=False)
    uid: int = field(default=0, compare=False)
    alpha: PackedAlpha | None = field(default=None, compare=False)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @cached_property
    def rle(self) -> dict[str, Any]:
        """The mask as JSON COCO RLE (computed once)."""
        return encode_mask(self.mask)


@dataclass(frozen=True)
class Step:
    """One entry of the history: the state after an action.

    ``prompts`` and ``result`` are the current object's prompts and its prediction (compact: mask only);
    ``objects`` the finished objects; ``editing`` the finished object being edited again (see
    :meth:`Session.reopen_object`); ``model`` the name of the model the front end used; ``uid`` a session-unique id;
    ``alpha`` the prediction's alpha matte when the engine gave one (8-bit PNG, :class:`PackedAlpha`, to save memory).
    """

    action: str
    prompts: Prompts
    result: StoredResult | None = None
    objects: tuple[AnnotatedObject, ...] = ()
    editing: AnnotatedObject | None = None
    model: str | None = None
    uid: int = 0
    alpha: PackedAlpha | None = field(default=None, compare=False)

    @property
    def prediction(self) -> Prediction | None:
        """The step's prediction, rebuilt from the stored mask (probabilities = the mask) and matte (8-bit)."""
        if self.result is None:
            return None
        restored = self.result.restore(self.prompts)
        return restored if self.alpha is None else replace(restored, alpha=self.alpha.unpack())


class Session:
    """Interactive annotation of one image: current object with undo/redo, several finished objects.

    ``predictor`` is a :class:`Predictor`; if ``image`` is given it is set on the predictor (features computed once),
    otherwise the predictor must already hold an image. ``threshold`` turns probabilities into the mask. ``model``
    names the model for front ends that switch models (recorded in every step, restored by undo). ``max_history``
    bounds the number of steps kept (the oldest are dropped); None keeps all.
    """

    def __init__(
        self,
        predictor: Predictor,
        image: np.ndarray | None = None,
        threshold: float = 0.5,
        default_label: str = "object",
        model: str | None = None,
        max_history: int | None = None,
    ) -> None:
        if not isinstance(predictor, Predictor):
            raise FinecutError(f"Session needs a Predictor, got {type(predictor).__name__}")
        if max_history is not None and max_history < 1:
            raise FinecutError(f"max_history must be >= 1, got {max_history}")
        if image is not None:
            predictor.set_image(image)
        self._predictor = predictor
        self._size = predictor.image_size
        self._threshold = _check_threshold(threshold)
        self.default_label = default_label
        self.max_history = max_history
        self._serial = 0
        self._history: list[Step] = [Step("start", Prompts(), model=model, uid=self._new_uid())]
        self._cursor = 0
        self._current: Prediction | None = None
        self._next_id = 1
        self._version = 0

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

    @property
    def version(self) -> int:
        """Incremented by every change (an action, undo, redo, a threshold change); never by reading."""
        return self._version

    @property
    def model(self) -> str | None:
        """The model name recorded in the current step."""
        return self.step.model

    def set_threshold(self, threshold: float) -> np.ndarray:
        """Change the probability threshold; the current mask is re-thresholded without recomputation."""
        value = _check_threshold(threshold)
        if value != self._threshold:
            self._threshold = value
            pred = self._current
            if pred is not None and not pred.state.get("restored"):  # keep what is shown for a later undo/redo
                result = StoredResult.of(pred, self.mask, threshold=value)
                self._history[self._cursor] = replace(self.step, result=result, uid=self._new_uid())
            self._version += 1
        return self.mask

    @property
    def step(self) -> Step:
        return self._history[self._cursor]

    @property
    def cursor(self) -> int:
        """Index of the current step in :attr:`history` (0 = the oldest step kept)."""
        return self._cursor

    @property
    def history(self) -> tuple[Step, ...]:
        """Every step kept (the ones after the cursor are the redo stack)."""
        return tuple(self._history)

    def history_nbytes(self) -> int:
        """Bytes of the stored masks and alpha mattes of the whole history (the current full prediction not
        included; a matte shared by several steps counted once)."""
        mattes = {id(s.alpha): s.alpha.nbytes for s in self._history if s.alpha is not None}
        return sum(s.result.nbytes for s in self._history if s.result is not None) + sum(mattes.values())

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
        return self._current

    @property
    def alpha(self) -> np.ndarray | None:
        """The current prediction's alpha matte (float32 H×W in [0, 1]) when the engine gave one, else None (a step
        restored by undo or redo has it at 8-bit precision)."""
        return None if self._current is None else self._current.alpha

    @property
    def alpha_png(self) -> bytes | None:
        """The current step's alpha matte as an 8-bit grayscale PNG (``round(alpha * 255)``), or None."""
        return None if self.step.alpha is None else self.step.alpha.png

    @property
    def mask(self) -> np.ndarray:
        """The current object's mask (bool H×W) at the session threshold; all False when there is none."""
        pred = self._current
        if pred is None:
            return np.zeros(self._size, dtype=bool)
        if pred.threshold == self._threshold:
            return np.asarray(pred.mask, dtype=bool)
        probs = np.asarray(pred.probs)
        if np.array_equal(pred.mask, probs > pred.threshold):  # the mask follows the probabilities
            return probs > self._threshold
        # the engine's mask is not its probabilities thresholded (FocalClick-XL with detail_feedback off: the mask is
        # the Detail-Net's, the probabilities the Object-Net's): its matte at the new threshold, else the mask as is
        return np.asarray(pred.mask, dtype=bool) if pred.alpha is None else np.asarray(pred.alpha) > self._threshold

    @property
    def can_undo(self) -> bool:
        return self._cursor > 0

    @property
    def can_redo(self) -> bool:
        return self._cursor < len(self._history) - 1

    @property
    def objects(self) -> tuple[AnnotatedObject, ...]:
        """The finished objects in drawing order, bottom to top (a new object goes on top)."""
        return self.step.objects

    @property
    def editing(self) -> AnnotatedObject | None:
        """The finished object whose mask and prompts are the current object again (see :meth:`reopen_object`)."""
        return self.step.editing

    # --------------------------------------------------------------- history
    def _new_uid(self) -> int:
        self._serial += 1
        return self._serial

    def _commit(self, step: Step, current: Prediction | None) -> None:
        """Append ``step`` after the cursor (dropping the redo stack) and make it current."""
        del self._history[self._cursor + 1 :]
        self._history.append(replace(step, uid=self._new_uid()))
        self._cursor += 1
        self._current = current
        if self.max_history is not None and len(self._history) > self.max_history + 1:
            drop = len(self._history) - (self.max_history + 1)
            del self._history[:drop]
            self._cursor -= drop
        self._version += 1

    def _commit_prediction(self, action: str, prompts: Prompts, prediction: Prediction | None,
                           model: str | None = None) -> Prediction | None:
        result = None if prediction is None else StoredResult.of(prediction)
        alpha = None if prediction is None or prediction.alpha is None else PackedAlpha.pack(prediction.alpha)
        self._commit(replace(self.step, action=action, prompts=prompts, result=result, model=model or self.model,
                             alpha=alpha), prediction)
        return prediction

    def _commit_objects(self, action: str, objects: Iterable[AnnotatedObject],
                        editing: AnnotatedObject | None) -> None:
        """A step that changes the finished objects only (the current object stays as it is); ``objects`` in drawing
        order."""
        self._commit(replace(self.step, action=action, objects=tuple(objects), editing=editing), self._current)

    # ------------------------------------------------------------ interaction
    def _predict(self, prompts: Prompts, previous: Prediction | None) -> Prediction | None:
        if prompts.is_empty:
            return None
        return self._predictor.predict(
            clicks=prompts.clicks,
            box=prompts.box,
            scribbles=prompts.scribbles,
            prior_mask=prompts.prior_mask,
            previous=previous,
            threshold=self._threshold,
        )

    def _push(self, action: str, prompts: Prompts) -> Prediction | None:
        height, width = self._size
        prompts.validate(height, width)
        return self._commit_prediction(action, prompts, self._predict(prompts, self._current))

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

    def refresh(self, model: str | None = None) -> Prediction | None:
        """Predict the current prompts again from scratch (after a model change, named ``model``), as a new
        undoable step; undoing it restores the previous prediction and model name."""
        prompts = self.prompts
        height, width = self._size
        prompts.validate(height, width)
        return self._commit_prediction("refresh", prompts, self._predict(prompts, None), model=model)

    def undo(self) -> Prediction | None:
        """Go back one step (no recomputation); returns the restored prediction."""
        if not self.can_undo:
            raise FinecutError("nothing to undo")
        self._move(-1)
        return self._current

    def redo(self) -> Prediction | None:
        """Go forward one undone step (no recomputation); returns the restored prediction."""
        if not self.can_redo:
            raise FinecutError("nothing to redo")
        self._move(1)
        return self._current

    def _move(self, delta: int) -> None:
        before = self.step
        self._cursor += delta
        after = self.step
        # finish/delete/relabel steps keep the same result and matte: no decoding
        if after.result is not before.result or after.alpha is not before.alpha:
            self._current = after.prediction
        self._version += 1

    def reset(self) -> None:
        """Clear the current object's prompts (and cancel editing a reopened object); undoable."""
        if self.prompts.is_empty and self._current is None and self.editing is None:
            return
        self._commit(replace(self.step, action="reset", prompts=Prompts(), result=None, editing=None, alpha=None),
                     None)

    # ---------------------------------------------------------------- objects
    def finish_object(self, label: str | None = None) -> AnnotatedObject:
        """Store the current mask as a finished object under ``label`` and start a new object; undoable.

        When a reopened object is being edited, it is replaced (same id; its label unless ``label`` is given). The
        object keeps the current step's alpha matte, if it has one.
        """
        mask = self.mask
        if not mask.any():
            raise FinecutError("the current object is empty: add a click, box or scribble before finishing it")
        editing = self.editing
        obj_id = editing.id if editing is not None else self._next_id
        name = label or (editing.label if editing is not None else self.default_label)
        obj = AnnotatedObject(obj_id, _clean_label(name), mask.copy(), self.prompts, uid=self._new_uid(),
                              alpha=self.step.alpha)
        if editing is None:
            self._next_id += 1
            objects = (*self.objects, obj)  # on top
        else:
            objects = tuple(obj if o.id == obj_id else o for o in self.objects)  # in its place
            if obj_id not in {o.id for o in self.objects}:  # deleted while being edited: back on top
                objects = (*objects, obj)
        self._commit(replace(self.step, action="finish", prompts=Prompts(), result=None, objects=objects,
                             editing=None, alpha=None), None)
        return obj

    def add_object(self, mask: np.ndarray, label: str | None = None) -> AnnotatedObject:
        """Add a finished object from an existing mask (an import), without touching the current object."""
        return self.add_objects([(mask, label)], action="add_object")[0]

    def add_objects(self, items: Iterable[tuple[np.ndarray, str | None]],
                    action: str = "import") -> tuple[AnnotatedObject, ...]:
        """Add finished objects from existing masks (``(mask, label)`` pairs, e.g. an import) on top, as one undoable
        step; the current object is not touched. Nothing given: no step."""
        made = []
        for mask, label in items:
            arr = np.asarray(mask).astype(bool)
            check_mask_shape(arr, self._size, what="object mask")
            made.append((arr.copy(), _clean_label(label or self.default_label)))
        if not made:
            return ()
        new = []
        for arr, label in made:
            new.append(AnnotatedObject(self._next_id, label, arr, uid=self._new_uid()))
            self._next_id += 1
        self._commit_objects(action, (*self.objects, *new), self.editing)
        return tuple(new)

    def _index(self, object_id: int) -> int:
        for i, obj in enumerate(self.objects):
            if obj.id == object_id:
                return i
        known = ", ".join(str(o.id) for o in self.objects) or "none"
        raise FinecutError(f"no object with id {object_id} (objects: {known})")

    def get_object(self, object_id: int) -> AnnotatedObject:
        return self.objects[self._index(object_id)]

    def delete_object(self, object_id: int) -> AnnotatedObject:
        """Remove a finished object (undoable: undo brings it back); returns it."""
        obj = self.get_object(object_id)
        editing = self.editing if self.editing is None or self.editing.id != object_id else None
        self._commit_objects("delete", (o for o in self.objects if o.id != object_id), editing)
        return obj

    def relabel_object(self, object_id: int, label: str) -> AnnotatedObject:
        """Give a finished object another label (undoable)."""
        old = self.get_object(object_id)
        new = replace(old, label=_clean_label(label), uid=self._new_uid())
        editing = new if self.editing is not None and self.editing.id == object_id else self.editing
        self._commit_objects("relabel", (new if o.id == object_id else o for o in self.objects), editing)
        return new

    def move_object(self, object_id: int, index: int) -> AnnotatedObject:
        """Move a finished object to position ``index`` of the drawing order (0 = bottom, -1 or ``len - 1`` = top);
        undoable. Where objects overlap the upper one wins (instance map, exports)."""
        obj = self.get_object(object_id)
        n = len(self.objects)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= int(index) < n:
            raise FinecutError(f"position {index!r} is out of range for {n} object(s) (0 = bottom, {n - 1} = top)")
        rest = [o for o in self.objects if o.id != object_id]
        rest.insert(int(index) % n, obj)
        if tuple(o.id for o in rest) != tuple(o.id for o in self.objects):
            self._commit_objects("reorder", rest, self.editing)
        return obj

    def reopen_object(self, object_id: int) -> AnnotatedObject:
        """Edit a finished object again: its mask becomes the current object and its prior mask (undoable).

        The clicks and scribbles that made it come back too (drawn, and given to the model again; its box is folded
        into the prior, so that a correction may reach past it), and the next click corrects the mask: with the mask as
        the prior, a model with Progressive Merge (FocalClick) changes only the region around that click. The object stays in :attr:`objects` until the edit is finished (:meth:`finish_object` replaces it,
        keeping its id and place); :meth:`reset` cancels the edit. Needs an empty current object.
        """
        if not self.prompts.is_empty or self._current is not None or self.editing is not None:
            raise FinecutError("finish or reset the current object before reopening another one")
        obj = self.get_object(object_id)
        prompts = replace(obj.prompts, box=None, prior_mask=np.asarray(obj.mask, dtype=bool))
        mask = np.asarray(obj.mask, dtype=bool)
        current = Prediction(mask=mask.copy(), probs=mask.astype(np.float32), prompts=prompts,
                             threshold=self._threshold, state={"restored": True},
                             alpha=None if obj.alpha is None else obj.alpha.unpack())
        result = StoredResult(PackedMask.from_rle(obj.rle), self._threshold)
        self._commit(replace(self.step, action="reopen", prompts=prompts, result=result, editing=obj,
                             alpha=obj.alpha), current)  # the object's own matte: saved as a reference to it
        return obj

    def paint(self, points: Iterable[Sequence[float]], width: float = 10.0, erase: bool = False) -> Prediction:
        """Add (or with ``erase``, remove) the pixels of a stroke ``width`` pixels wide through ``points`` to the
        current object's mask, without the model; undoable.

        The edited mask becomes the object's prior mask and its clicks, box and scribbles are folded into it (they
        no longer describe the mask), so the next click starts from exactly what is shown. An alpha matte of the
        current object becomes 1 (paint) or 0 (erase) under the stroke.
        """
        stroke = Scribble(tuple((float(p[0]), float(p[1])) for p in points), not erase, float(width))
        height, width_px = self._size
        stroke.check_inside(height, width_px)
        if stroke.width > 2 * max(height, width_px):
            raise FinecutError(f"brush width {stroke.width:g} is larger than the image")
        mask = self.mask.copy()
        if erase and not mask.any():
            raise FinecutError("nothing to erase: the current object is empty")
        area = stroke_mask(stroke, self._size)
        mask = mask & ~area if erase else mask | area
        alpha = self.alpha
        if alpha is not None:
            alpha = np.array(alpha, dtype=np.float32)
            alpha[area] = 0.0 if erase else 1.0
        prompts = Prompts(prior_mask=mask)
        prediction = Prediction(mask=mask, probs=mask.astype(np.float32), prompts=prompts,
                                threshold=self._threshold, state={"restored": True}, alpha=alpha)
        self._commit(replace(self.step, action="erase" if erase else "paint", prompts=prompts,
                             result=StoredResult.of(prediction),
                             alpha=None if alpha is None else PackedAlpha.pack(alpha)), prediction)
        return prediction

    def instance_map(self) -> np.ndarray:
        """Instance-id map (uint16 H×W): 0 background, each finished object's id; where objects overlap, the upper one
        in drawing order (:attr:`objects`) wins."""
        out = np.zeros(self._size, dtype=np.uint16)
        for obj in self.objects:
            out[obj.mask] = obj.id
        return out

    # ---------------------------------------------------------------- export
    def export(
        self,
        out_dir: str | Path,
        stem: str | None = None,
        image_file: str | None = None,
        formats: Iterable[str] = ("png", "coco_rle", "coco_polygons"),
        overwrite: bool = True,
    ) -> list[Path]:
        """Write the finished objects with :func:`finecut.export.export_images` (the folder is replaced as a
        whole); returns the files written. The PNG export writes the objects' alpha mattes too (8-bit)."""
        height, width = self._size
        formats = tuple(formats)
        with_alpha = "png" in formats  # only the PNG export writes mattes: no decoding for the others

        def alpha(obj: AnnotatedObject) -> np.ndarray | None:
            return obj.alpha.unpack_uint8() if with_alpha and obj.alpha is not None else None

        image = ExportImage(
            file_name=image_file or f"{stem or 'image'}.png",
            height=height,
            width=width,
            objects=tuple(ExportObject(o.id, o.label, o.mask, alpha=alpha(o)) for o in self.objects),
            stem=stem,
        )
        return export_images([image], out_dir, formats=formats, overwrite=overwrite)

    # ---------------------------------------------------------- serialisation
    def save_parts(self) -> tuple[dict[str, Any], dict[str, Callable[[], dict[str, Any]]]]:
        """The session as a small ``head`` and immutable ``records``: ``{key: make_record}``, one per step
        (``s<uid>``) and per object version (``o<uid>``). A key always names the same content, so a store that
        already wrote a key need not build or write it again. :meth:`to_dict` is ``head`` plus the built records."""
        height, width = self._size
        head = {
            "format": SESSION_FORMAT,
            "height": height,
            "width": width,
            "threshold": self._threshold,
            "default_label": self.default_label,
            "next_id": self._next_id,
            "serial": self._serial,
            "version": self._version,
            "model": self.model,
            "cursor": self._cursor,
            "history": [s.uid for s in self._history],
        }
        records: dict[str, Callable[[], dict[str, Any]]] = {}
        for step in self._history:
            records[f"s{step.uid}"] = lambda s=step: _step_to_dict(s)
            for obj in (*step.objects, *([step.editing] if step.editing is not None else [])):
                records.setdefault(f"o{obj.uid}", lambda o=obj: _object_to_dict(o))
        return head, records

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description of the whole session (masks as COCO RLE)."""
        head, records = self.save_parts()
        return {**head, "records": {key: make() for key, make in records.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], predictor: Predictor, model: str | None = None,
                  max_history: int | None = None) -> "Session":
        """Rebuild a session saved by :meth:`to_dict` on ``predictor`` (which must hold the same image).

        Restored predictions carry the saved mask as their probabilities and any JSON-serialisable engine state, so
        undo/redo and the next click work without replaying the history. ``model`` names the model of a format-1
        session (which did not record it).
        """
        try:
            fmt = int(data.get("format", 0))
            if fmt not in (1, SESSION_FORMAT):
                raise FinecutError(f"unsupported session format {data.get('format')!r} (expected {SESSION_FORMAT})")
            height, width = int(data["height"]), int(data["width"])
            if predictor.image_size != (height, width):
                raise FinecutError(
                    f"saved session is for a {width}x{height} image, but the predictor holds a "
                    f"{predictor.image_size[1]}x{predictor.image_size[0]} image"
                )
            session = cls(predictor, threshold=float(data.get("threshold", 0.5)),
                          default_label=str(data.get("default_label", "object")), model=model,
                          max_history=max_history)
            if fmt == 1:
                history, objects = _format1_history(data, (height, width), model, session._new_uid)
            else:
                history = _format2_history(data, (height, width))
                session._serial = max(int(data.get("serial", 0)), *(s.uid for s in history),
                                      *(o.uid for s in history for o in s.objects))
                objects = history[-1].objects
            cursor = int(data.get("cursor", len(history) - 1))
            if not 0 <= cursor < len(history):
                raise FinecutError(f"history cursor {cursor} is out of range 0..{len(history) - 1}")
            session._history = history
            session._cursor = cursor
            session._current = history[cursor].prediction
            ids = [o.id for s in history for o in s.objects]
            session._next_id = max([int(data.get("next_id", 1)), *(i + 1 for i in ids), *(o.id + 1 for o in objects)])
            session._version = int(data.get("version", 0))
            return session
        except FinecutError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
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


def saved_objects(data: Mapping[str, Any], with_alpha: bool = False) -> list[dict[str, Any]]:
    """The finished objects of a saved session dict (either format) as ``{"id", "label", "mask" (RLE)}`` dicts,
    without a predictor and without decoding masks.

    ``with_alpha`` adds ``"alpha"``: the object's alpha matte decoded to uint8 H×W, 0–255
    (:meth:`PackedAlpha.unpack_uint8`), or None when it has none (always, in format 1). Without it the mattes are
    not even read, so that counting objects stays cheap."""
    try:
        if int(data.get("format", 0)) == 1:
            return [{"id": int(o["id"]), "label": str(o["label"]), "mask": o["mask"],
                     **({"alpha": None} if with_alpha else {})} for o in data.get("objects", [])]
        history = list(data["history"])
        if not history:
            return []
        records = data["records"]
        step = records[f"s{history[int(data['cursor'])]}"]
        size = (int(data["height"]), int(data["width"])) if with_alpha else (0, 0)
        out = []
        for r in (records[f"o{uid}"] for uid in step.get("objects", [])):
            obj = {"id": int(r["id"]), "label": str(r["label"]), "mask": r["mask"]}
            if with_alpha:
                packed = _saved_alpha(r, size)
                obj["alpha"] = None if packed is None else packed.unpack_uint8()
            out.append(obj)
        return out
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FinecutError(f"corrupt session data: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------- helpers
def stroke_mask(stroke: Scribble, size: tuple[int, int]) -> np.ndarray:
    """The pixels (bool H×W) a stroke covers: a line ``stroke.width`` wide through its points, with round ends."""
    height, width = size
    canvas = np.zeros((height, width), np.uint8)
    shift = 4  # sub-pixel precision of OpenCV's drawing (1/16 px)
    centres = np.asarray(stroke.points, dtype=np.float64) - 0.5  # OpenCV draws pixel (i, j) at the point (i, j)
    pts = np.round(centres * (1 << shift)).astype(np.int32)
    radius = max(0.5, stroke.width / 2)
    if radius <= 0.75:  # a one-pixel brush: exactly the pixels the line passes through
        for x, y in stroke.points:
            canvas[min(height - 1, int(y)), min(width - 1, int(x))] = 1
        if len(pts) > 1:
            cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, 1, 1, cv2.LINE_8, shift)
        return canvas.astype(bool)
    r = int(round(radius * (1 << shift)))
    for p in pts:
        cv2.circle(canvas, (int(p[0]), int(p[1])), r, 1, -1, cv2.LINE_8, shift)
    if len(pts) > 1:
        cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, 1, max(1, int(round(stroke.width))), cv2.LINE_8, shift)
    return canvas.astype(bool)


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
        if key == "restored":
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def _result_to_dict(result: StoredResult) -> dict[str, Any]:
    return {"mask": result.mask.to_rle(), "threshold": result.threshold, "seconds": result.seconds,
            "state": _json_state(result.state)}


def _result_from_dict(data: Mapping[str, Any], size: tuple[int, int]) -> StoredResult:
    rle = data["mask"]
    if tuple(int(v) for v in rle["size"]) != size:
        raise FinecutError(f"saved prediction mask has size {rle['size']}, expected {list(size)}")
    return StoredResult(PackedMask.from_rle(rle, validate=False), float(data.get("threshold", 0.5)),
                        float(data.get("seconds", 0.0)), dict(data.get("state") or {}))


def _step_to_dict(step: Step) -> dict[str, Any]:
    out = {
        "action": step.action,
        "prompts": prompts_to_dict(step.prompts),
        "prediction": None if step.result is None else _result_to_dict(step.result),
        "objects": [o.uid for o in step.objects],
        "editing": None if step.editing is None else step.editing.uid,
        "model": step.model,
    }
    # A step's own matte is not saved (it would add its PNG to the save file at every click); the matte of a reopened
    # object is, as a reference to that object, so that finishing the edit after a reload keeps it.
    if step.alpha is not None and step.editing is not None and step.alpha is step.editing.alpha:
        out["alpha"] = "editing"
    return out


def _object_to_dict(obj: AnnotatedObject) -> dict[str, Any]:
    out = {"id": obj.id, "label": obj.label, "mask": obj.rle, "prompts": prompts_to_dict(obj.prompts)}
    if obj.alpha is not None:
        out["alpha_png"] = base64.b64encode(obj.alpha.png).decode("ascii")
    return out


def _object_from_dict(data: Mapping[str, Any], size: tuple[int, int], uid: int) -> AnnotatedObject:
    mask = decode_mask(data["mask"])
    check_mask_shape(mask, size, what=f"object {data.get('id')} mask")
    return AnnotatedObject(int(data["id"]), _clean_label(data["label"]), mask,
                           prompts_from_dict(data.get("prompts") or {}, size), uid=uid,
                           alpha=_saved_alpha(data, size))


def _saved_alpha(data: Mapping[str, Any], size: tuple[int, int]) -> PackedAlpha | None:
    """The alpha matte of a saved object record (``alpha_png``, base64), header-checked, or None."""
    if data.get("alpha_png") is None:
        return None
    try:
        png = base64.b64decode(data["alpha_png"], validate=True)
    except (ValueError, TypeError) as exc:
        raise FinecutError(f"object {data.get('id')}: saved alpha matte is not base64: {exc}") from exc
    try:
        return PackedAlpha.from_png(png, size)
    except FinecutError as exc:
        raise FinecutError(f"object {data.get('id')}: {exc}") from exc


def _format2_history(data: Mapping[str, Any], size: tuple[int, int]) -> list[Step]:
    records = data["records"]
    objects: dict[int, AnnotatedObject] = {}

    def obj(uid: int) -> AnnotatedObject:
        if uid not in objects:
            objects[uid] = _object_from_dict(records[f"o{uid}"], size, uid)
        return objects[uid]

    history = []
    for uid in data["history"]:
        rec = records[f"s{int(uid)}"]
        prompts = prompts_from_dict(rec.get("prompts") or {}, size)
        result = _result_from_dict(rec["prediction"], size) if rec.get("prediction") is not None else None
        step_objects = tuple(obj(int(u)) for u in rec.get("objects", []))  # drawing order, as saved
        ids = [o.id for o in step_objects]
        if len(set(ids)) != len(ids):
            raise FinecutError("saved session has duplicate object ids")
        editing = obj(int(rec["editing"])) if rec.get("editing") is not None else None
        alpha = editing.alpha if rec.get("alpha") == "editing" and editing is not None and result is not None else None
        history.append(Step(str(rec.get("action", "step")), prompts, result, step_objects, editing,
                            rec.get("model"), int(uid), alpha))
    if not history:
        raise FinecutError("saved session has no history")
    return history


def _format1_history(data: Mapping[str, Any], size: tuple[int, int], model: str | None,
                     new_uid: Callable[[], int]) -> tuple[list[Step], tuple[AnnotatedObject, ...]]:
    """A session saved before finish/delete were steps: every step gets today's objects."""
    objects = tuple(sorted((_object_from_dict(item, size, new_uid()) for item in data.get("objects", [])),
                           key=lambda o: o.id))
    ids = [o.id for o in objects]
    if len(set(ids)) != len(ids):
        raise FinecutError("saved session has duplicate object ids")
    history = []
    for item in data.get("history", []) or [{"action": "start"}]:
        prompts = prompts_from_dict(item.get("prompts") or {}, size)
        result = _result_from_dict(item["prediction"], size) if item.get("prediction") is not None else None
        history.append(Step(str(item.get("action", "step")), prompts, result, objects, None, model, new_uid()))
    return history, objects
