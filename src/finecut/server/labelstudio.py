"""Label Studio ML backend: ``/health``, ``/setup``, ``/predict`` (interactive pre-annotation from smart keypoints).

Label Studio posts ``/predict`` with ``{"tasks": [task], "label_config": "<View>...", "project": "...",
"params": {"context": {"result": [...]}}}``. The context holds the user's smart ``keypointlabels`` (``value.x``,
``value.y`` in percent of ``original_width`` / ``original_height``; ``is_positive`` false for Alt-clicks) and
``rectanglelabels`` (``x``, ``y``, ``width``, ``height`` in percent). The answer is
``{"results": [{"result": [...], "score": s, "model_version": v}], "model_version": v}`` with one ``brushlabels``
result (``{"format": "rle", "rle": [...], "brushlabels": [label]}``, Label Studio's own RLE: see
:mod:`finecut.server.brush_rle`) when the labeling config has ``<BrushLabels>``, or ``polygonlabels`` results (one per
connected part, points in percent; Label Studio polygons have no holes) when it has ``<PolygonLabels>`` only.
"""

from __future__ import annotations

import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from finecut import __version__
from finecut.errors import FinecutError
from finecut.export import mask_to_parts
from finecut.prompts import Box, Click, ClickKind

from finecut.server.brush_rle import mask_to_brush_rle
from finecut.server.guards import FiniteNumber
from finecut.server.images import ImageSource
from finecut.server.interactive import InteractiveSegmenter

MAX_CONFIG_CHARS = 1_000_000


@dataclass(frozen=True)
class LabelingConfig:
    """What finecut needs from a Label Studio labeling config."""

    from_name: str = "tag"
    to_name: str = "image"
    image_key: str | None = None
    kind: str = "brushlabels"  # or "polygonlabels"
    labels: tuple[str, ...] = ()


def parse_label_config(xml: str | None) -> LabelingConfig:
    """Find the ``<BrushLabels>`` (else ``<PolygonLabels>``) tag, its image and labels in a labeling config."""
    if not xml:
        return LabelingConfig()
    if len(xml) > MAX_CONFIG_CHARS:
        raise FinecutError("labeling config is too large")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise FinecutError("labeling config must not contain DTDs or entities")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise FinecutError(f"labeling config is not valid XML: {exc}") from exc
    tags = {el.tag.lower(): el for el in reversed(list(root.iter()))}
    target = tags.get("brushlabels")
    kind = "brushlabels"
    if target is None:
        target = tags.get("polygonlabels")
        kind = "polygonlabels"
    if target is None:
        raise FinecutError("labeling config has no <BrushLabels> or <PolygonLabels> tag for finecut to fill")
    from_name = target.get("name", "tag")
    to_name = target.get("toName", "image")
    image_key = None
    for el in root.iter():
        if el.tag.lower() == "image" and el.get("name") == to_name:
            value = el.get("value", "")
            image_key = value[1:] if value.startswith("$") else None
    labels = tuple(el.get("value", "") for el in target.iter() if el.tag.lower() == "label" and el.get("value"))
    return LabelingConfig(from_name, to_name, image_key, kind, labels)


@dataclass
class LabelStudioState:
    configs: dict[str, LabelingConfig] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ContextValue(BaseModel):
    """``value`` of a context result: coordinates in percent of the image (labels and other keys kept as extras)."""

    model_config = ConfigDict(extra="allow")

    x: FiniteNumber | None = None
    y: FiniteNumber | None = None
    width: FiniteNumber | None = None
    height: FiniteNumber | None = None


PositiveNumber = Annotated[FiniteNumber, Field(gt=0)]


class ContextResult(BaseModel):
    """One of the user's smart regions in ``params.context.result``."""

    model_config = ConfigDict(extra="ignore")

    type: str = ""
    value: ContextValue | None = None
    original_width: PositiveNumber | None = None
    original_height: PositiveNumber | None = None
    is_positive: StrictBool | None = None


class Context(BaseModel):
    model_config = ConfigDict(extra="ignore")

    result: Annotated[list[ContextResult], Field(max_length=10_000)] | None = None


class Params(BaseModel):
    model_config = ConfigDict(extra="ignore")

    context: Context | None = None


class Task(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: dict[str, Any]


class PredictRequest(BaseModel):
    """The body of ``POST /predict`` (keys finecut does not use are ignored)."""

    model_config = ConfigDict(extra="ignore")

    tasks: Annotated[list[Task], Field(min_length=1)]
    label_config: Annotated[str, Field(max_length=MAX_CONFIG_CHARS)] | None = None
    project: Any = None
    params: Params | None = None
    context: Context | None = None


class SetupRequest(BaseModel):
    """The body of ``POST /setup``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    project: Any = None
    schema_: Annotated[str, Field(max_length=MAX_CONFIG_CHARS)] | None = Field(default=None, alias="schema")
    label_config: Annotated[str, Field(max_length=MAX_CONFIG_CHARS)] | None = None


def _edge(v: float, size: int, what: str) -> float:
    """A coordinate on the image: up to half a pixel past an edge (percent rounding) is moved onto the edge pixel;
    further out is refused."""
    if not -0.5 <= v <= size + 0.5:
        raise FinecutError(f"{what} is outside the image ({size} px)")
    return min(max(v, 0.0), size - 1e-3)


def context_prompts(results: list[ContextResult], width: int,
                    height: int) -> tuple[list[Click], Box | None, str | None]:
    """Clicks (in order), box and label from Label Studio's context results."""
    clicks: list[Click] = []
    box = None
    label = None
    for i, item in enumerate(results):
        kind = item.type.lower()
        value = item.value or ContextValue()
        ow = item.original_width or width
        oh = item.original_height or height
        sx, sy = width / ow, height / oh  # in case Label Studio's image size differs from the fetched one
        names = (value.model_extra or {}).get(kind)
        if isinstance(names, list) and names:
            label = str(names[0])
        where = f"context result {i} ({kind})"
        if kind == "keypointlabels":
            if value.x is None or value.y is None:
                raise FinecutError(f"{where}: value needs x and y (percent of the image)")
            x = _edge(value.x * ow / 100.0 * sx, width, f"{where}: x = {value.x:g}%")
            y = _edge(value.y * oh / 100.0 * sy, height, f"{where}: y = {value.y:g}%")
            positive = True if item.is_positive is None else item.is_positive
            clicks.append(Click(x, y, ClickKind.POSITIVE if positive else ClickKind.NEGATIVE))
        elif kind == "rectanglelabels":
            if None in (value.x, value.y, value.width, value.height):
                raise FinecutError(f"{where}: value needs x, y, width and height (percent of the image)")
            x0 = value.x * ow / 100.0 * sx
            y0 = value.y * oh / 100.0 * sy
            x1 = x0 + value.width * ow / 100.0 * sx
            y1 = y0 + value.height * oh / 100.0 * sy
            clipped = (max(0.0, min(x0, x1)), max(0.0, min(y0, y1)), min(float(width), max(x0, x1)),
                       min(float(height), max(y0, y1)))
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                raise FinecutError(f"{where}: the rectangle ({value.x:g}%, {value.y:g}%, {value.width:g}% x "
                                   f"{value.height:g}%) covers no part of the {width}x{height} image")
            box = Box(*clipped)
    return clicks, box, label


def labelstudio_router(segmenter: InteractiveSegmenter, source: ImageSource, model: str) -> APIRouter:
    router = APIRouter()
    state = LabelStudioState()
    model_version = f"finecut-{__version__}-{model}"

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "finecut", "model_version": model_version}

    @router.get("/")
    def root() -> dict[str, Any]:
        return health()

    @router.get("/metrics")
    def metrics() -> dict[str, Any]:
        return {}

    @router.post("/setup")
    def setup(data: SetupRequest) -> dict[str, Any]:
        config = parse_label_config(data.schema_ or data.label_config)
        with state.lock:
            state.configs[str(data.project if data.project is not None else "")] = config
        return {"model_version": model_version}

    @router.post("/webhook", status_code=201)
    async def webhook() -> dict[str, Any]:
        return {}

    @router.post("/predict")
    def predict(data: PredictRequest) -> dict[str, Any]:
        if data.label_config:
            config = parse_label_config(data.label_config)
        else:
            with state.lock:
                config = state.configs.get(str(data.project if data.project is not None else ""), LabelingConfig())
        context = (data.params.context if data.params else None) or data.context
        results = (context.result if context else None) or []
        if not results:
            return {"results": [], "model_version": model_version}
        out = [_predict_task(task, results, config) for task in data.tasks]
        return {"results": out, "model_version": model_version}

    def _predict_task(task: Task, results: list[ContextResult], config: LabelingConfig) -> dict[str, Any]:
        task_data = task.data
        key = config.image_key if config.image_key in task_data else next(iter(task_data), None)
        if key is None:
            raise FinecutError("task data has no image")
        image = source.load(task_data[key])
        h, w = image.rgb.shape[:2]
        clicks, box, label = context_prompts(results, w, h)
        label = label or (config.labels[0] if config.labels else "Object")
        res = segmenter.segment(model, image, clicks, box)
        mask = res.prediction.mask
        score = float(res.prediction.probs[mask].mean()) if mask.any() else 0.0
        common = {"from_name": config.from_name, "to_name": config.to_name, "original_width": w,
                  "original_height": h, "image_rotation": 0, "readonly": False}
        if config.kind == "brushlabels":
            items = [{
                "id": uuid.uuid4().hex[:10], **common, "type": "brushlabels", "score": score,
                "value": {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": [label]},
            }]
        else:
            items = []
            for part in mask_to_parts(mask, tolerance=0.5):
                pts = [[round(float(np.clip(x, 0, w)) * 100.0 / w, 4), round(float(np.clip(y, 0, h)) * 100.0 / h, 4)]
                       for x, y in part.exterior]
                items.append({"id": uuid.uuid4().hex[:10], **common, "type": "polygonlabels", "score": score,
                              "value": {"points": pts, "closed": True, "polygonlabels": [label]}})
        return {"result": items, "score": score, "model_version": model_version}

    return router
