"""CVAT interactor: the request/response of CVAT's serverless (nuclio) interactors, plus a nuclio-dashboard stand-in.

Request (JSON), as CVAT's lambda manager sends it to an interactor function::

    {"image": "<base64 PNG/JPEG>", "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
     "obj_bbox": [[x0, y0], [x1, y1]] | null, "threshold": 0.5 (optional)}

``obj_bbox`` is set when the function declares ``startswith_box`` (CVAT then takes the first two positive points as
the box corners); the flat form ``[x0, y0, x1, y1]`` is accepted too. Coordinates are image pixels; points and boxes
outside the image are refused with *422* (as the app refuses them), a point on the far edge (``x == width``) is taken.
Every field is type-checked: numbers must be finite JSON numbers (no ``true``, ``"12"``, ``NaN``, ``Infinity``).

Response: ``{"mask": [[0, 1, ...], ...], "bounds": [x0, y0, x1, y1]}`` — the mask inside its bounding box (inclusive
pixel bounds), which CVAT 2.x places at ``bounds``; this is what CVAT's interactor responses allow, and it keeps a click
on a small object of a 3000x2000 image to a few kB instead of 12 MB. Answers are gzip-compressed for clients that
accept it (CVAT's lambda manager does), which keeps large objects small on the wire too. ``?format=full`` gives the
whole image's mask without ``bounds``; ``?format=polygon`` gives ``{"points": [[x, y], ...]}`` (the outline of the
largest part), the shape older CVAT releases expected.

Endpoints: ``POST /cvat`` (default model) and ``POST /cvat/{model}``; ``POST /`` (nuclio "direct" invocation, default
model); and the three nuclio dashboard calls CVAT makes — ``GET /api/functions``, ``GET /api/functions/{id}``,
``POST /api/function_invocations`` (function id in the ``x-nuclio-function-name`` header) — so CVAT can list and call
finecut's models directly when its ``CVAT_NUCLIO_HOST`` / ``CVAT_NUCLIO_PORT`` point at ``finecut serve``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from finecut.errors import FinecutError
from finecut.export import mask_to_parts
from finecut.prompts import Box, Click, ClickKind

from finecut.server.guards import FiniteNumber
from finecut.server.images import decode_base64_image
from finecut.server.interactive import InteractiveSegmenter

FUNCTION_PREFIX = "finecut-"

#: Most points accepted in one request (per list).
MAX_POINTS = 10_000

Point = tuple[FiniteNumber, FiniteNumber]


def _flat_box(value: Any) -> Any:
    """``[[x0, y0], [x1, y1]]`` -> ``[x0, y0, x1, y1]`` (the flat form passes as is)."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(p, list) for p in value):
        return [v for p in value for v in p]
    return value


class CvatRequest(BaseModel):
    """The JSON CVAT's lambda manager posts to an interactor function (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    image: Annotated[str, Field(min_length=1)]
    pos_points: Annotated[list[Point], Field(max_length=MAX_POINTS)] | None = None
    neg_points: Annotated[list[Point], Field(max_length=MAX_POINTS)] | None = None
    obj_bbox: Annotated[tuple[FiniteNumber, FiniteNumber, FiniteNumber, FiniteNumber],
                        BeforeValidator(_flat_box)] | None = None
    threshold: Annotated[FiniteNumber, Field(ge=0.0, le=1.0)] | None = None


def point_click(point: Point, kind: ClickKind, width: int, height: int, what: str) -> Click:
    """A CVAT point as a click. Points outside the image are refused (as the app refuses them); a point on the image's
    far edge (``x == width``, which CVAT's canvas produces) is moved onto the last pixel."""
    x, y = point
    if not (0.0 <= x <= width and 0.0 <= y <= height):
        raise FinecutError(f"{what} ({x:g}, {y:g}) is outside the {width}x{height} image "
                           f"(x must be in [0, {width}], y in [0, {height}])")
    return Click(min(x, width - 1e-3), min(y, height - 1e-3), kind)


def image_box(values: tuple[float, float, float, float] | None, width: int, height: int) -> Box | None:
    """``obj_bbox`` as a :class:`Box`; refused (quoting the box as sent) when it is empty or leaves the image."""
    if values is None:
        return None
    x0, y0, x1, y1 = values
    shown = f"({x0:g}, {y0:g}, {x1:g}, {y1:g})"
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    if left < 0 or top < 0 or right > width or bottom > height:
        raise FinecutError(f"obj_bbox {shown} extends outside the {width}x{height} image")
    if right <= left or bottom <= top:
        raise FinecutError(f"obj_bbox {shown} is empty: it needs two different corners")
    return Box(left, top, right, bottom)


def _rows_json(m: np.ndarray) -> bytes:
    """A 2-D 0/1 array as the bytes of a JSON list of lists (fast for large masks)."""
    h, w = m.shape
    rows = np.full((h, 2 * w + 2), ord(","), dtype=np.uint8)
    rows[:, 0] = ord("[")
    rows[:, 1 : 2 * w : 2] = m + ord("0")
    rows[:, 2 * w] = ord("]")
    return b"[" + rows.tobytes()[:-1] + b"]"


def mask_json(mask: np.ndarray) -> bytes:
    """``{"mask": [[...], ...]}``: the whole image (``?format=full``)."""
    return b'{"mask":' + _rows_json(np.asarray(mask, dtype=np.uint8)) + b"}"


def cropped_mask_json(mask: np.ndarray) -> bytes:
    """``{"mask": [[...]], "bounds": [x0, y0, x1, y1]}``: the mask inside its bounding box (inclusive pixel bounds),
    which CVAT places at ``bounds``. An empty mask is one background pixel at (0, 0)."""
    m = np.asarray(mask, dtype=np.uint8)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return b'{"mask":[[0]],"bounds":[0,0,0,0]}'
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = _rows_json(m[y0 : y1 + 1, x0 : x1 + 1])
    return b'{"mask":' + crop + b',"bounds":[%d,%d,%d,%d]}' % (x0, y0, x1, y1)


def largest_outline(mask: np.ndarray) -> list[list[float]]:
    parts = mask_to_parts(mask)
    if not parts:
        return []
    best = max(parts, key=lambda p: abs(float(np.sum(p.exterior[:, 0] * np.roll(p.exterior[:, 1], -1)
                                                       - np.roll(p.exterior[:, 0], -1) * p.exterior[:, 1]))))
    return [[round(float(x), 2), round(float(y), 2)] for x, y in best.exterior]


Format = Literal["mask", "full", "polygon"]


def cvat_router(segmenter: InteractiveSegmenter, model_names: Sequence[str], default_model: str,
                max_pixels: int | None = None, http_port: int | None = None) -> APIRouter:
    router = APIRouter()

    def interact(model: str | None, data: CvatRequest, fmt: Format | None) -> Response:
        image = decode_base64_image(data.image, "image", max_pixels)
        h, w = image.rgb.shape[:2]
        clicks = [point_click(p, ClickKind.POSITIVE, w, h, f"pos_points[{i}]")
                  for i, p in enumerate(data.pos_points or [])]
        clicks += [point_click(p, ClickKind.NEGATIVE, w, h, f"neg_points[{i}]")
                   for i, p in enumerate(data.neg_points or [])]
        box = image_box(data.obj_bbox, w, h)
        result = segmenter.segment(model, image, clicks, box, data.threshold)
        mask = result.prediction.mask
        headers = {"X-Finecut-Model-Ms": f"{result.prediction.seconds * 1000:.2f}",
                   "X-Finecut-Total-Ms": f"{result.total_seconds * 1000:.2f}"}
        if fmt == "polygon":
            body = json.dumps({"points": largest_outline(mask)}).encode()
        elif fmt == "full":
            body = mask_json(mask)
        else:
            body = cropped_mask_json(mask)
        return Response(body, media_type="application/json", headers=headers)

    def model_of_function(function_id: str) -> str:
        name = function_id[len(FUNCTION_PREFIX):] if function_id.startswith(FUNCTION_PREFIX) else function_id
        if name not in model_names:
            raise FinecutError(f"unknown function {function_id!r}; available: "
                               f"{', '.join(FUNCTION_PREFIX + n for n in model_names)}")
        return name

    def describe(name: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": FUNCTION_PREFIX + name,
                "annotations": {
                    "name": f"finecut {name}",
                    "type": "interactor",
                    "framework": "finecut",
                    "spec": "",
                    "min_pos_points": "1",
                    "min_neg_points": "0",
                    "help_message": "Left click adds object, right click adds background.",
                },
            },
            "spec": {"description": f"finecut interactive segmentation ({name})"},
            "status": {"state": "ready", **({"httpPort": http_port} if http_port else {})},
        }

    @router.post("/cvat")
    def cvat_default(data: CvatRequest, format: Format | None = None) -> Response:  # noqa: A002
        return interact(default_model, data, format)

    @router.post("/cvat/{model}")
    def cvat_model(model: str, data: CvatRequest, format: Format | None = None) -> Response:  # noqa: A002
        if model not in model_names:
            raise FinecutError(f"unknown model {model!r}; available: {', '.join(model_names)}")
        return interact(model, data, format)

    @router.post("/")
    def nuclio_direct(data: CvatRequest, format: Format | None = None) -> Response:  # noqa: A002
        return interact(default_model, data, format)

    @router.get("/api/functions")
    def list_functions() -> dict[str, Any]:
        return {FUNCTION_PREFIX + n: describe(n) for n in model_names}

    @router.get("/api/functions/{function_id}")
    def get_function(function_id: str) -> dict[str, Any]:
        return describe(model_of_function(function_id))

    @router.post("/api/function_invocations")
    def invoke(request: Request, data: CvatRequest, format: Format | None = None) -> Response:  # noqa: A002
        function_id = request.headers.get("x-nuclio-function-name")
        if not function_id:
            raise FinecutError("missing x-nuclio-function-name header")
        return interact(model_of_function(function_id), data, format)

    return router
