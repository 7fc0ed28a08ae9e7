"""CVAT interactor: the request/response of CVAT's serverless (nuclio) interactors, plus a nuclio-dashboard stand-in.

Request (JSON), as CVAT's lambda manager sends it to an interactor function::

    {"image": "<base64 PNG/JPEG>", "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
     "obj_bbox": [[x0, y0], [x1, y1]] | null, "threshold": 0.5 (optional)}

``obj_bbox`` is set when the function declares ``startswith_box`` (CVAT then takes the first two positive points as
the box corners); the flat form ``[x0, y0, x1, y1]`` is accepted too. Coordinates are image pixels.

Response: ``{"mask": [[0, 1, ...], ...]}`` — a 2-D 0/1 list of the image size, what current CVAT (2.x) reads from
interactors. With ``?format=polygon`` the response is ``{"points": [[x, y], ...]}`` instead (the outline of the
largest part), the shape older CVAT releases expected.

Endpoints: ``POST /cvat`` (default model) and ``POST /cvat/{model}``; ``POST /`` (nuclio "direct" invocation, default
model); and the three nuclio dashboard calls CVAT makes — ``GET /api/functions``, ``GET /api/functions/{id}``,
``POST /api/function_invocations`` (function id in the ``x-nuclio-function-name`` header) — so CVAT can list and call
finecut's models directly when its ``CVAT_NUCLIO_HOST`` / ``CVAT_NUCLIO_PORT`` point at ``finecut serve``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from finecut.errors import FinecutError
from finecut.export import mask_to_parts
from finecut.prompts import Box, Click, ClickKind

from finecut.server.images import decode_base64_image
from finecut.server.interactive import InteractiveSegmenter

FUNCTION_PREFIX = "finecut-"


def parse_points(value: Any, what: str) -> list[tuple[float, float]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FinecutError(f"{what} must be a list of [x, y] points")
    points = []
    for p in value:
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise FinecutError(f"{what}: each point must be [x, y], got {p!r}")
        try:
            x, y = float(p[0]), float(p[1])
        except (TypeError, ValueError) as exc:
            raise FinecutError(f"{what}: point {p!r} is not numeric") from exc
        points.append((x, y))
    return points


def parse_bbox(value: Any) -> Box | None:
    if value is None:
        return None
    try:
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise FinecutError(f"obj_bbox must be [[x0, y0], [x1, y1]], got {value!r}") from exc
    if flat.size != 4:
        raise FinecutError(f"obj_bbox must be [[x0, y0], [x1, y1]], got {value!r}")
    x0, y0, x1, y1 = flat.tolist()
    return Box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def clamp_click(x: float, y: float, kind: ClickKind, width: int, height: int) -> Click:
    """A click moved onto the image if a tool sends a point on the border (x == width)."""
    return Click(min(max(x, 0.0), width - 1e-3), min(max(y, 0.0), height - 1e-3), kind)


def mask_json(mask: np.ndarray) -> bytes:
    """``{"mask": [[...], ...]}`` built directly as bytes (fast for large images)."""
    m = np.asarray(mask, dtype=np.uint8)
    h, w = m.shape
    rows = np.full((h, 2 * w + 2), ord(","), dtype=np.uint8)
    rows[:, 0] = ord("[")
    rows[:, 1 : 2 * w : 2] = m + ord("0")
    rows[:, 2 * w] = ord("]")
    body = rows.tobytes()[:-1]
    return b'{"mask":[' + body + b"]}"


def largest_outline(mask: np.ndarray) -> list[list[float]]:
    parts = mask_to_parts(mask)
    if not parts:
        return []
    best = max(parts, key=lambda p: abs(float(np.sum(p.exterior[:, 0] * np.roll(p.exterior[:, 1], -1)
                                                       - np.roll(p.exterior[:, 0], -1) * p.exterior[:, 1]))))
    return [[round(float(x), 2), round(float(y), 2)] for x, y in best.exterior]


def cvat_router(segmenter: InteractiveSegmenter, model_names: Sequence[str], default_model: str,
                max_pixels: int, http_port: int | None = None) -> APIRouter:
    router = APIRouter()

    def interact(model: str | None, data: Any, fmt: str | None) -> Response:
        if not isinstance(data, dict):
            raise FinecutError("CVAT request must be a JSON object")
        if "image" not in data:
            raise FinecutError("CVAT request has no 'image' (base64)")
        image = decode_base64_image(data["image"], "image", max_pixels)
        h, w = image.rgb.shape[:2]
        pos = parse_points(data.get("pos_points"), "pos_points")
        neg = parse_points(data.get("neg_points"), "neg_points")
        box = parse_bbox(data.get("obj_bbox"))
        if box is not None:
            box = Box(max(0.0, box.x0), max(0.0, box.y0), min(float(w), box.x1), min(float(h), box.y1))
        clicks = [clamp_click(x, y, ClickKind.POSITIVE, w, h) for x, y in pos]
        clicks += [clamp_click(x, y, ClickKind.NEGATIVE, w, h) for x, y in neg]
        threshold = data.get("threshold")
        result = segmenter.segment(model, image, clicks, box, None if threshold is None else float(threshold))
        mask = result.prediction.mask
        headers = {"X-Finecut-Model-Ms": f"{result.prediction.seconds * 1000:.2f}",
                   "X-Finecut-Total-Ms": f"{result.total_seconds * 1000:.2f}"}
        if fmt == "polygon":
            return Response(json.dumps({"points": largest_outline(mask)}), media_type="application/json",
                            headers=headers)
        return Response(mask_json(mask), media_type="application/json", headers=headers)

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
    def cvat_default(data: Annotated[Any, Body()], format: str | None = None) -> Response:  # noqa: A002
        return interact(default_model, data, format)

    @router.post("/cvat/{model}")
    def cvat_model(model: str, data: Annotated[Any, Body()], format: str | None = None) -> Response:  # noqa: A002
        if model not in model_names:
            raise FinecutError(f"unknown model {model!r}; available: {', '.join(model_names)}")
        return interact(model, data, format)

    @router.post("/")
    def nuclio_direct(data: Annotated[Any, Body()], format: str | None = None) -> Response:  # noqa: A002
        return interact(default_model, data, format)

    @router.get("/api/functions")
    def list_functions() -> dict[str, Any]:
        return {FUNCTION_PREFIX + n: describe(n) for n in model_names}

    @router.get("/api/functions/{function_id}")
    def get_function(function_id: str) -> dict[str, Any]:
        return describe(model_of_function(function_id))

    @router.post("/api/function_invocations")
    def invoke(request: Request, data: Annotated[Any, Body()], format: str | None = None) -> Response:  # noqa: A002
        function_id = request.headers.get("x-nuclio-function-name")
        if not function_id:
            raise FinecutError("missing x-nuclio-function-name header")
        return interact(model_of_function(function_id), data, format)

    return router
